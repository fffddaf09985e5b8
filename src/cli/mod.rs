//! Command-line edge: parses arguments, builds the backend, mounts.
pub fn main() -> i32 {
    eprintln!("bucketfs: not built yet");
    2
}
