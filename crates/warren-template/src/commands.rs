//! The shell commands that package steps become inside the Debian guest.
//!
//! Package steps always run as root. Bookworm marks its system Python as externally managed
//! (PEP 668), so pip needs `--break-system-packages` to install system-wide; pip and npm are
//! installed through apt first when the image lacks them, so a template can say `npm = [..]`
//! without a separate `apt = ["nodejs", "npm"]` step.

/// Quotes `word` for POSIX `sh` (single quotes; an embedded `'` becomes `'\''`).
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-:=/@,".contains(c))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn quoted(packages: &[String]) -> String {
    packages
        .iter()
        .map(|p| shell_quote(p))
        .collect::<Vec<_>>()
        .join(" ")
}

const APT_ENV: &str = "DEBIAN_FRONTEND=noninteractive";

/// `apt-get update && apt-get install` of `packages`.
pub fn apt_install(packages: &[String]) -> String {
    format!(
        "export {APT_ENV} && apt-get update && \
         apt-get install -y --no-install-recommends {}",
        quoted(packages)
    )
}

/// System-wide pip install; installs `python3-pip` first when `pip` is missing.
pub fn pip_install(packages: &[String]) -> String {
    format!(
        "{{ command -v pip >/dev/null 2>&1 || {{ {} ; }} ; }} && \
         pip install --break-system-packages {}",
        apt_install(&["python3-pip".to_string()]),
        quoted(packages)
    )
}

/// Global npm install; installs `nodejs npm` first when `npm` is missing.
pub fn npm_install(packages: &[String]) -> String {
    format!(
        "{{ command -v npm >/dev/null 2>&1 || {{ {} ; }} ; }} && npm install -g {}",
        apt_install(&["nodejs".to_string(), "npm".to_string()]),
        quoted(packages)
    )
}

/// Ready check by TCP port, from inside the guest. bash's `/dev/tcp` needs no extra package
/// (the base image has bash but not `ss` or `nc`).
pub fn port_check(port: u16) -> String {
    format!("bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_commands() {
        assert_eq!(shell_quote("flask==3"), "flask==3");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        let apt = apt_install(&["curl".into(), "git".into()]);
        assert!(apt.contains("DEBIAN_FRONTEND=noninteractive"));
        assert!(apt.ends_with("apt-get install -y --no-install-recommends curl git"));
        let pip = pip_install(&["requests".into()]);
        assert!(pip.ends_with("pip install --break-system-packages requests"));
        let npm = npm_install(&["typescript".into()]);
        assert!(npm.contains("command -v npm"));
        assert!(npm.contains("nodejs npm"));
        assert!(npm.ends_with("npm install -g typescript"));
        // The generated shell must at least parse.
        for cmd in [apt, pip, npm, port_check(8000)] {
            let status = std::process::Command::new("sh")
                .args(["-n", "-c", &cmd])
                .status();
            assert!(status.unwrap().success(), "{cmd}");
        }
    }
}

#[cfg(test)]
mod port_tests {
    use super::port_check;

    fn run(cmd: &str) -> bool {
        let status = std::process::Command::new("sh").args(["-c", cmd]).status();
        status.is_ok_and(|s| s.success())
    }

    /// The ready check really connects (run on the host's bash, as the guest's would).
    #[test]
    fn port_check_follows_a_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(run(&port_check(port)));
        drop(listener);
        assert!(!run(&port_check(port)));
    }
}
