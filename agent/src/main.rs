fn main() -> std::process::ExitCode {
    access_token_agent::cli::main()
}
