//! The `rtest` binary: everything lives in the library.

fn main() {
    rtest::cli::main()
}
