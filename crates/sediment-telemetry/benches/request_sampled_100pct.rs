//! One produce request's telemetry, OTLP export sampled 100pct. See request_path.rs.
#[path = "request_path.rs"]
mod request_path;

fn main() {
    request_path::run(Some(1.0), "request_sampled_100pct");
}
