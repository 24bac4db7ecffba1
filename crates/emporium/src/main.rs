//! The `emporium` command. Everything lives in the library, which the tests use too.

fn main() -> std::process::ExitCode {
    emporium::cli::main()
}
