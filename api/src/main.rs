//! The `api` binary: everything is in the library; see [`api::cli`].
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    api::cli::main()
}
