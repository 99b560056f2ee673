fn main() {
    std::process::exit(msgd::cli::main());
}
