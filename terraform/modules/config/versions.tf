terraform {
  # Provider-free on purpose: everything here is computed from inputs, so it can
  # be tested with `terraform test` without cloud credentials or providers.
  required_version = ">= 1.6.0"
}
