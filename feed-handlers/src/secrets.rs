//! Secrets (venue credentials, and the API's keys and passwords): read from the
//! environment (or a `*_FILE` path named there), never from config files, and never
//! logged. At the crate root, not under `live/`, because the API uses it too.

/// The value of environment variable `var`, or the trimmed contents of the file named
/// by `{var}_FILE`.
pub fn from_env(var: &str) -> Result<String, String> {
    if let Ok(v) = std::env::var(var) {
        if !v.is_empty() {
            return Ok(v);
        }
    }
    let file_var = format!("{var}_FILE");
    match std::env::var(&file_var) {
        Ok(path) => std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("{file_var} names {path}, which cannot be read: {e}"))
            .and_then(|s| {
                if s.is_empty() {
                    Err(format!("{path} (from {file_var}) is empty"))
                } else {
                    Ok(s)
                }
            }),
        Err(_) => Err(format!("environment variable {var} (or {file_var}) is not set")),
    }
}

/// Appends `param=value` pairs to a URL's query string, percent-encoding the values.
pub fn with_query(url: &str, pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return url.to_owned();
    }
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}", q.join("&"))
}

/// `text` with every secret value (raw or percent-encoded) replaced by `***`, for
/// error messages that might echo a URL.
pub fn scrub(text: &str, secrets: &[(String, String)]) -> String {
    let mut out = text.to_owned();
    for (k, v) in secrets {
        if v.is_empty() {
            continue;
        }
        let encoded = with_query("", &[(k.clone(), v.clone())]);
        let encoded = encoded.split_once('=').map_or("", |(_, e)| e).to_owned();
        out = out.replace(v.as_str(), "***");
        if !encoded.is_empty() {
            out = out.replace(&encoded, "***");
        }
    }
    out
}

#[cfg(test)]
#[allow(unsafe_code)] // std::env::set_var in a test of reading secrets from the environment
mod tests {
    use super::*;

    #[test]
    fn reads_env_then_file() {
        let var = format!("SB_TEST_SECRET_{}", std::process::id());
        assert!(from_env(&var).unwrap_err().contains(&var));
        let path = std::env::temp_dir().join(format!("{var}.txt"));
        std::fs::write(&path, "from-file\n").unwrap();
        // SAFETY: tests in this module are the only users of these variable names.
        unsafe { std::env::set_var(format!("{var}_FILE"), &path) };
        assert_eq!(from_env(&var).unwrap(), "from-file");
        unsafe { std::env::set_var(&var, "from-env") };
        assert_eq!(from_env(&var).unwrap(), "from-env");
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn scrubs_secrets_from_messages() {
        let s = vec![("access_token".to_owned(), "t0k/en".to_owned())];
        let url = with_query("wss://ws.kite.trade", &s);
        assert_eq!(
            scrub(&format!("Unable to connect to {url}"), &s),
            "Unable to connect to wss://ws.kite.trade?access_token=***"
        );
        assert_eq!(scrub("token t0k/en leaked", &s), "token *** leaked");
    }

    #[test]
    fn encodes_query_values() {
        let pairs = vec![
            ("api_key".to_owned(), "k 1".to_owned()),
            ("access_token".to_owned(), "a&b=c".to_owned()),
        ];
        assert_eq!(
            with_query("wss://ws.kite.trade", &pairs),
            "wss://ws.kite.trade?api_key=k%201&access_token=a%26b%3Dc"
        );
        assert_eq!(with_query("ws://x/?v=1", &pairs[..1]), "ws://x/?v=1&api_key=k%201");
        assert_eq!(with_query("ws://x", &[]), "ws://x");
    }
}
