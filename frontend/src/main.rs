//! config -> telemetry -> startup, nothing else; `tally-api keys ...` runs the key CLI.

use std::process::ExitCode;

use tally_api::config::Config;
use tally_api::startup::Application;
use tally_api::telemetry;

/// Most of a request's allocations are small and short-lived (headers, JSON, the Redis
/// command); mimalloc serves them with less work than glibc's malloc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tally-api: {e}");
            return ExitCode::from(2);
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("keys") {
        return tally_api::cli::keys(&config, &args[1..]).await;
    }
    telemetry::init_logging();
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            log::error!("{e}");
            eprintln!("tally-api: {e}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
