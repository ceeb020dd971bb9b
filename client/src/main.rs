fn main() {
    eprintln!("access-token: the client commands are not built yet");
    std::process::exit(2);
}
