//! Validation rules shared by the TOML file parser and the E2B request mapping.
//!
//! Each rule returns the problem as a short phrase; the caller adds where it was found (a
//! line and column for files, a step index for E2B requests).

use crate::model::BASE_IMAGE_NAME;

/// Template names: what `fromTemplate`, `base = ".."` and URLs carry.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if name == BASE_IMAGE_NAME {
        return Err(format!(
            "`{BASE_IMAGE_NAME}` is reserved for the Debian base image"
        ));
    }
    let ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_./".contains(c));
    if !ok || name.starts_with(['.', '/', '-']) {
        return Err(
            "may hold only a-z, 0-9, '-', '_', '.', '/' and must start with a letter \
                    or digit"
                .into(),
        );
    }
    Ok(())
}

/// Package names for apt, pip and npm, including version pins (`flask==3.0`, `left-pad@1`).
/// The set excludes shell metacharacters so the quoted command stays obvious in logs.
pub fn check_package(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-:=<>@/~^,![]".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid package name"))
    }
}

/// Environment variable names.
pub fn check_env_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!("`{key}` is not a valid environment variable name"))
    }
}

/// Guest paths (COPY destinations, WORKDIR).
pub fn check_guest_path(path: &str) -> Result<(), String> {
    if path.starts_with('/') && !path.contains('\0') {
        Ok(())
    } else {
        Err(format!("`{path}` must be an absolute guest path"))
    }
}

/// Unix user names.
pub fn check_user(user: &str) -> Result<(), String> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("`{user}` is not a valid user name"))
    }
}

/// File modes in octal, `755` or `0755`.
pub fn check_mode(mode: &str) -> Result<(), String> {
    let ok = (1..=4).contains(&mode.len()) && mode.chars().all(|c| ('0'..='7').contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!("`{mode}` is not an octal file mode"))
    }
}

/// COPY sources: relative, inside the context (checked lexically here, on disk in `layers.rs`).
pub fn check_copy_src(src: &str) -> Result<(), String> {
    let path = std::path::Path::new(src);
    if src.is_empty() || path.is_absolute() {
        return Err(format!(
            "`{src}` must be a path relative to the build context"
        ));
    }
    let mut depth: i32 = 0;
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(format!("`{src}` leaves the build context"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert!(check_name("my-app").is_ok());
        assert!(check_name("base").is_err());
        assert!(check_name("My App").is_err());
        assert!(check_package("flask==3.0.0").is_ok());
        assert!(check_package("a; rm -rf /").is_err());
        assert!(check_package("--pre").is_err());
        assert!(check_env_key("PATH_2").is_ok());
        assert!(check_env_key("2X").is_err());
        assert!(check_copy_src("app/../lib").is_ok());
        assert!(check_copy_src("app/../../etc").is_err());
        assert!(check_copy_src("/etc/passwd").is_err());
        assert!(check_mode("0755").is_ok());
        assert!(check_mode("0855").is_err());
    }
}
