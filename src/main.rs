//! The `switchyard` binary: parses arguments and runs the command.

fn main() -> std::process::ExitCode {
    switchyard::cli::run()
}
