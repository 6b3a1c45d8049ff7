//! Measures this machine as a `host` hardware profile and prints it as TOML
//! (run: `cargo bench -p qevo --bench hw_host`; redirect to host.toml to keep it).

fn main() {
    match qevo::hw::host::measure_host(&qevo::hw::host::HostOptions::default())
        .and_then(|m| qevo::hw::host::host_profile_toml(&m))
    {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("host measurement failed: {e}");
            std::process::exit(1);
        }
    }
}
