//! One produce request's telemetry, OTLP export sampled 1pct. See request_path.rs.
#[path = "request_path.rs"]
mod request_path;

fn main() {
    request_path::run(Some(0.01), "request_sampled_1pct");
}
