//! The `emporium` command. Everything lives in the library, which the tests use too.

/// jemalloc rather than the system allocator: under sustained load glibc kept the memory the
/// shop freed, so the process grew while its heap did not (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    emporium::cli::main()
}
