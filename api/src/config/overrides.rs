//! `STOCKSBLITZ_{SECTION}_{KEY}` environment overrides.
//!
//! `[api] listen` is `STOCKSBLITZ_API_LISTEN`; nested tables join with `_`
//! (`[engine.idle] strategy` is `STOCKSBLITZ_ENGINE_IDLE_STRATEGY`). The value takes the
//! type of the value it replaces; a new key's value is read as a TOML literal when it
//! is one, else as a string. Arrays of tables (`[[instruments]]`, `[[feeds]]`) are not
//! overridable: edit the file. A variable naming no known section is an error, so a
//! typo never goes unnoticed.

use super::ConfigError;
use super::ENV_PREFIX;

/// Sections that may be overridden.
const SECTIONS: [&str; 12] = [
    "api",
    "log",
    "engine",
    "simulator",
    "orders",
    "auth",
    "questdb",
    "redis",
    "rate_limits",
    "audit",
    "surveillance",
    "health",
];

/// (dotted key, variable) pairs applied.
pub type Applied = Vec<(String, String)>;

pub fn apply(doc: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) -> Result<Applied, ConfigError> {
    let mut vars: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    vars.sort();
    let mut applied = Vec::new();
    for (var, raw) in vars {
        let rest = var[ENV_PREFIX.len()..].to_ascii_lowercase();
        let Some((section, key)) = SECTIONS
            .iter()
            .find_map(|s| rest.strip_prefix(s).and_then(|k| k.strip_prefix('_')).map(|k| (*s, k)))
        else {
            return Err(ConfigError::Env {
                var,
                message: format!(
                    "names no config section: overridable sections are {}",
                    SECTIONS.join(", ")
                ),
            });
        };
        if key.is_empty() {
            return Err(ConfigError::Env {
                var,
                message: "names a section but no key".into(),
            });
        }
        let table = doc
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(table) = table.as_table_mut() else {
            return Err(ConfigError::Env {
                var,
                message: format!("[{section}] is not a table in the config file"),
            });
        };
        let path = set(table, key, &raw).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        applied.push((format!("{section}.{path}"), var));
    }
    Ok(applied)
}

/// Sets `key` (underscore-joined, possibly through sub-tables) in `table`; returns the
/// dotted path set.
fn set(table: &mut toml::Table, key: &str, raw: &str) -> Result<String, String> {
    if let Some(existing) = table.get(key) {
        let value = coerce_like(existing, raw)?;
        table.insert(key.to_owned(), value);
        return Ok(key.to_owned());
    }
    // A sub-table whose name prefixes the key: `idle_strategy` -> [idle] strategy.
    let sub = table
        .iter()
        .filter(|(k, v)| v.is_table() && key.starts_with(&format!("{k}_")))
        .map(|(k, _)| k.clone())
        .max_by_key(String::len);
    if let Some(sub) = sub {
        let rest = &key[sub.len() + 1..];
        if let Some(t) = table.get_mut(&sub).and_then(toml::Value::as_table_mut) {
            return set(t, rest, raw).map(|p| format!("{sub}.{p}"));
        }
    }
    table.insert(key.to_owned(), literal(raw));
    Ok(key.to_owned())
}

fn literal(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn coerce_like(existing: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    use toml::Value;
    match existing {
        Value::String(_) => Ok(Value::String(raw.to_owned())),
        Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("{raw:?} is not an integer")),
        Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("{raw:?} is not a number")),
        Value::Boolean(_) => match raw.trim() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(format!("{raw:?} is not true or false")),
        },
        Value::Table(_) => Err("names a table, not a key: override its keys one by one".into()),
        Value::Array(_) | Value::Datetime(_) => match literal(raw) {
            v if std::mem::discriminant(&v) == std::mem::discriminant(existing) => Ok(v),
            _ => Err(format!("{raw:?} is not a TOML value of the same type as the file's")),
        },
    }
}

/// " (set by VAR)" when `key` (or a parent of it) came from an override.
pub fn origin_of(applied: &Applied, key: &str) -> String {
    applied
        .iter()
        .find(|(k, _)| k == key || key.starts_with(&format!("{k}.")) || k.starts_with(&format!("{key}.")))
        .map(|(_, var)| format!(" (set by {var})"))
        .unwrap_or_default()
}
