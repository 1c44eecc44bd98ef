//! The `strata` binary: parse the command line and config, start the roles
//! of `target`, wait for SIGTERM or SIGINT, stop gracefully, exit 0.

use std::process::ExitCode;

use strata::app::App;
use strata::config::{CliError, parse_cli};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match parse_cli(std::env::args_os()) {
        Ok(cli) => cli,
        Err(CliError::Usage(err)) => {
            // --help and --version exit 0, usage errors 2.
            let _ = err.print();
            return ExitCode::from(err.exit_code() as u8);
        }
        Err(err) => {
            eprintln!("strata: invalid configuration: {err}");
            return ExitCode::from(1);
        }
    };
    if cli.print_config {
        print!("{}", cli.config.to_yaml(true));
        return ExitCode::SUCCESS;
    }
    strata::logging::init(&cli.config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("strata: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "Strata failed");
            eprintln!("strata: {err:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(config: strata::config::Config) -> anyhow::Result<()> {
    let app = App::start(config).await?;
    tokio::select! {
        signal = wait_for_signal() => signal?,
        _ = app.shutdown_requested() => tracing::info!("shutdown requested over HTTP"),
    }
    tracing::info!("shutting down");
    app.stop().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "received signal"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "received signal"),
    }
    Ok(())
}
