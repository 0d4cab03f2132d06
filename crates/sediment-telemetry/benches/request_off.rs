//! One produce request's telemetry, OTLP export off. See request_path.rs.
#[path = "request_path.rs"]
mod request_path;

fn main() {
    request_path::run(None, "request_off");
}
