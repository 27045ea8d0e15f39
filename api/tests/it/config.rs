//! Configuration: every file in configs/ loads; bad configs stop start-up with a
//! message naming the key; environment overrides.

use crate::common;

use stocksblitz_api::config::{self, ConfigError, Source};

fn load(text: &str, env: &[(&str, &str)]) -> Result<config::Validated, ConfigError> {
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>();
    config::load(&Source::Embedded, text, env)
}

fn base() -> String {
    common::test_config(|_| {})
}

fn edited(edit: impl FnOnce(&mut toml::Table)) -> String {
    common::test_config(edit)
}

/// The default with the Kite feed (feeds[2]) replaced by a synthetic one, then `edit`.
fn with_synthetic(edit: impl FnOnce(&mut toml::Table)) -> String {
    edited(|d| {
        let f: toml::Table = toml::from_str(
            r#"
name = "synthetic"
kind = "synthetic"
instruments = ["RELIANCE", "INFY"]
[synthetic]
seed = 1
rate_per_sec = 100
depth = 5
start_prices = { RELIANCE = "2450.00", INFY = "1520.00" }
"#,
        )
        .unwrap();
        d["feeds"].as_array_mut().unwrap()[2] = toml::Value::Table(f);
        edit(d);
    })
}

fn err(text: &str, env: &[(&str, &str)]) -> String {
    load(text, env).expect_err("config should be rejected").to_string()
}

#[test]
fn every_shipped_config_validates() {
    // configs/prod.toml names secrets that live in the environment; stand-ins here (no
    // other test in this binary reads these variables; set under the testkit's lock).
    for var in ["KITE_API_KEY", "KITE_ACCESS_TOKEN"] {
        stocksblitz_testkit::env::set(var, "test-stand-in");
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("configs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (source, text) = config::read_source(Some(&path)).expect("readable");
            config::load(&source, &text, Vec::new()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "default.toml and prod.toml");
    // The embedded default is configs/default.toml.
    let v = load(config::DEFAULT_TOML, &[]).expect("embedded default");
    assert_eq!(v.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let text = base().replace("listen = ", "lisen = \"x\"\nlisten = ");
    let e = err(&text, &[]);
    assert!(e.starts_with("api.lisen: unknown field"), "{e}");

    let e = err(&format!("{}\n[surprise]\nx = 1\n", base()), &[]);
    assert!(e.contains("surprise"), "{e}");

    let e = err(
        &edited(|d| {
            d["instruments"][0]
                .as_table_mut()
                .unwrap()
                .insert("colour".into(), "red".into());
        }),
        &[],
    );
    assert!(e.contains("instruments[0]") && e.contains("colour"), "{e}");
}

#[test]
fn bad_values_name_their_key() {
    let cases: Vec<(String, &str)> = vec![
        (edited(|d| d["api"]["listen"] = "localhost".into()), "api.listen"),
        (
            edited(|d| d["api"]["ws_queue_capacity"] = 0.into()),
            "api.ws_queue_capacity",
        ),
        (
            edited(|d| d["api"]["ws_idle_timeout_secs"] = 1.into()),
            "api.ws_idle_timeout_secs",
        ),
        (edited(|d| d["log"]["level"] = "loud[".into()), "log.level"),
        (edited(|d| d["log"]["format"] = "xml".into()), "log.format"),
        (
            edited(|d| d["engine"]["stale_after_ms"] = 0.into()),
            "engine.stale_after_ms",
        ),
        (
            edited(|d| d["engine"]["output_ring_capacity"] = 16.into()),
            "engine.output_ring_capacity",
        ),
        (
            edited(|d| {
                d["engine"].as_table_mut().unwrap().insert("core".into(), 4096.into());
            }),
            "engine.core",
        ),
        (
            edited(|d| d["engine"]["idle"]["strategy"] = "nap".into()),
            "engine.idle.strategy",
        ),
        (
            edited(|d| d["engine"]["input_ring_capacity"] = "big".into()),
            "engine.input_ring_capacity",
        ),
        (
            edited(|d| d["instruments"][1]["symbol"] = "BTCUSDT".into()),
            "instruments[1].symbol",
        ),
        (
            edited(|d| d["instruments"][0]["tick_size"] = "0.000000001".into()),
            "instruments[0].tick_size",
        ),
        (
            edited(|d| d["instruments"][0]["session"] = "Moon/Base 09:00-10:00".into()),
            "instruments[0].session",
        ),
        (
            edited(|d| d["instruments"][0]["kind"] = "bond".into()),
            "instruments[0].kind",
        ),
        (
            edited(|d| d["feeds"][0]["instruments"] = toml::Value::Array(vec!["NOPE".into()])),
            "feeds[0].instruments",
        ),
        (
            edited(|d| {
                d["feeds"][0].as_table_mut().unwrap().insert("core".into(), 4096.into());
            }),
            "feeds[0].core",
        ),
        (
            with_synthetic(|d| d["feeds"][2]["synthetic"]["rate_per_sec"] = 0.into()),
            "feeds[2].synthetic.rate_per_sec",
        ),
        (
            with_synthetic(|d| {
                d["feeds"][2]["synthetic"]["start_prices"]
                    .as_table_mut()
                    .unwrap()
                    .remove("INFY");
            }),
            "feeds[2].synthetic.start_prices.INFY",
        ),
        (
            with_synthetic(|d| d["feeds"][2]["synthetic"]["start_prices"]["RELIANCE"] = "1.234".into()),
            "feeds[2].synthetic.start_prices.RELIANCE",
        ),
        (
            with_synthetic(|d| {
                d["feeds"][2].as_table_mut().unwrap().remove("synthetic");
            }),
            "feeds[2].synthetic",
        ),
        (
            edited(|d| {
                d["feeds"][0].as_table_mut().unwrap().remove("live");
            }),
            "feeds[0].live",
        ),
        (
            edited(|d| d["feeds"][0]["live"]["ws_url"] = "http://x".into()),
            "feeds[0].live.ws_url",
        ),
        (
            edited(|d| d["feeds"][0]["live"]["dead_after_ms"] = 1.into()),
            "feeds[0].live.dead_after_ms",
        ),
        (
            edited(|d| {
                d["feeds"][0]["live"].as_table_mut().unwrap().remove("rest_url");
            }),
            "feeds[0].live.rest_url",
        ),
        (
            edited(|d| {
                d["feeds"][0]["instruments"] = toml::Value::Array(vec!["BTCUSDT".into(), "RELIANCE".into()]);
                d["feeds"][2]["instruments"] = toml::Value::Array(vec!["INFY".into()]);
            }),
            "feeds[0].instruments",
        ),
        (
            edited(|d| d["simulator"]["enabled"] = false.into()),
            "feeds[0].live.ws_url",
        ),
        (
            edited(|d| d["simulator"]["listen"] = "nowhere".into()),
            "simulator.listen",
        ),
        (
            edited(|d| d["simulator"]["rate_per_sec"] = 0.into()),
            "simulator.rate_per_sec",
        ),
        (
            edited(|d| {
                d["simulator"]["start_prices"].as_table_mut().unwrap().remove("ETHUSDT");
            }),
            "simulator.start_prices.ETHUSDT",
        ),
        (
            edited(|d| {
                d["api"].as_table_mut().unwrap().remove("listen");
            }),
            "api",
        ),
        (
            edited(|d| d["orders"]["journal"]["fsync"] = "interval".into()),
            "orders.journal.fsync_interval_ms",
        ),
        (
            edited(|d| {
                let j = d["orders"]["journal"].as_table_mut().unwrap();
                j.insert("fsync_interval_ms".into(), 5.into());
            }),
            "orders.journal.fsync_interval_ms",
        ),
        (
            edited(|d| {
                let j = d["orders"]["journal"].as_table_mut().unwrap();
                j.insert("fsync".into(), "interval".into());
                j.insert("fsync_interval_ms".into(), 0.into());
            }),
            "orders.journal.fsync_interval_ms",
        ),
        (
            edited(|d| d["orders"]["journal"]["segment_bytes"] = 1000.into()),
            "orders.journal.segment_bytes",
        ),
        (
            edited(|d| d["orders"]["journal"]["snapshot_every_records"] = 0.into()),
            "orders.journal.snapshot_every_records",
        ),
        (
            edited(|d| d["orders"]["journal"]["dir"] = "".into()),
            "orders.journal.dir",
        ),
        (
            edited(|d| d["orders"]["day_roll_24x7_utc"] = "24:00".into()),
            "orders.day_roll_24x7_utc",
        ),
        (
            edited(|d| d["orders"]["day_roll_24x7_utc"] = "8:00".into()),
            "orders.day_roll_24x7_utc",
        ),
        (
            edited(|d| d["orders"]["day_roll_24x7_utc"] = "08:60".into()),
            "orders.day_roll_24x7_utc",
        ),
    ];
    for (text, key) in cases {
        let e = load(&text, &[]).expect_err(key);
        let msg = e.to_string();
        assert!(msg.starts_with(key), "expected an error naming {key}, got: {msg}");
    }
    assert!(err(
        &edited(|d| {
            d["api"].as_table_mut().unwrap().remove("listen");
        }),
        &[]
    )
    .contains("listen"));
}

#[test]
fn syntax_errors_say_where() {
    let e = err("[api\nlisten = 1", &[]);
    assert!(e.contains("invalid TOML") && e.contains("line"), "{e}");
}

#[test]
fn environment_overrides() {
    let v = load(
        &base(),
        &[
            ("STOCKSBLITZ_API_LISTEN", "127.0.0.1:9999"),
            ("STOCKSBLITZ_ENGINE_IDLE_STRATEGY", "busy-spin"),
            ("STOCKSBLITZ_ENGINE_STALE_AFTER_MS", "1234"),
            ("STOCKSBLITZ_API_FANOUT_IDLE_PARK_MICROS", "77"),
            ("STOCKSBLITZ_ENGINE_CORE", "0"),
            ("UNRELATED", "x"),
        ],
    )
    .expect("overrides apply");
    assert_eq!(v.listen.to_string(), "127.0.0.1:9999");
    assert_eq!(
        v.config.engine.idle.strategy,
        stocksblitz_engine::idle::IdleKind::BusySpin
    );
    assert_eq!(v.config.engine.stale_after_ms, 1234);
    assert_eq!(v.config.api.fanout_idle.park_micros, 77);
    assert_eq!(v.config.engine.core, Some(0));

    let e = err(&base(), &[("STOCKSBLITZ_NOPE_X", "1")]);
    assert!(e.starts_with("STOCKSBLITZ_NOPE_X"), "{e}");
    let e = err(&base(), &[("STOCKSBLITZ_API_WS_QUEUE_CAPACITY", "lots")]);
    assert!(
        e.starts_with("STOCKSBLITZ_API_WS_QUEUE_CAPACITY") && e.contains("integer"),
        "{e}"
    );
    let e = err(&base(), &[("STOCKSBLITZ_API_LISTN", "1.2.3.4:5")]);
    assert!(e.contains("listn") && e.contains("STOCKSBLITZ_API_LISTN"), "{e}");
    let e = err(&base(), &[("STOCKSBLITZ_API_LISTEN", "nowhere")]);
    assert!(
        e.starts_with("api.listen") && e.contains("STOCKSBLITZ_API_LISTEN"),
        "{e}"
    );
    let e = err(&base(), &[("STOCKSBLITZ_ENGINE_IDLE", "x")]);
    assert!(e.starts_with("STOCKSBLITZ_ENGINE_IDLE"), "{e}");
}

/// The binary refuses a bad config with the key in its message and a non-zero exit.
#[test]
fn binary_stops_on_bad_config() {
    let dir = std::env::temp_dir().join(format!("sb-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join("bad.toml");
    std::fs::write(&path, edited(|d| d["engine"]["book_max_levels"] = 0.into())).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stocksblitz"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("run binary");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("engine.book_max_levels"), "{stderr}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stocksblitz"))
        .args(["config", "check"])
        .arg(dir.join("missing.toml"))
        .output()
        .expect("run binary");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_stocksblitz"))
        .arg("--help")
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("serve") && help.contains("config"), "{help}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Venue credentials come only from the environment; a missing one stops start-up with
/// the key and the variable named (and never its value anywhere).
#[test]
fn kite_credentials_come_from_the_environment() {
    let text = edited(|d| {
        let auth: toml::Table = toml::from_str(r#"api_key = "SB_TEST_UNSET_KITE_API_KEY""#).unwrap();
        d["feeds"][2]["live"]
            .as_table_mut()
            .unwrap()
            .insert("auth_query".into(), toml::Value::Table(auth));
    });
    let e = err(&text, &[]);
    assert!(
        e.starts_with("feeds[2].live.auth_query.api_key") && e.contains("SB_TEST_UNSET_KITE_API_KEY"),
        "{e}"
    );
}

#[test]
fn security_settings_are_checked() {
    // Production refuses HS256, development key files and a CORS wildcard.
    let prod = |edit: fn(&mut toml::Table)| {
        edited(move |d| {
            d["api"]["environment"] = toml::Value::String("production".into());
            edit(d);
        })
    };
    let e = err(&prod(|_| {}), &[]);
    assert!(e.starts_with("auth.algorithm:") && e.contains("RS256 or EdDSA"), "{e}");
    let e = err(
        &prod(|d| {
            let a = d["auth"].as_table_mut().expect("auth");
            a.insert("algorithm".into(), "EdDSA".into());
            a.insert("public_key_env".into(), "SBZ_X".into());
        }),
        &[],
    );
    assert!(e.starts_with("auth.secret_env:") && e.contains("only for HS256"), "{e}");
    let e = err(
        &edited(|d| {
            d["api"]["environment"] = toml::Value::String("production".into());
            d["api"]["cors_allowed_origins"] = toml::Value::Array(vec!["*".into()]);
        }),
        &[],
    );
    assert!(
        e.starts_with("api.cors_allowed_origins[0]:") && e.contains("production"),
        "{e}"
    );
    // A wildcard is fine in development; a path is never an origin.
    load(
        &edited(|d| d["api"]["cors_allowed_origins"] = toml::Value::Array(vec!["*".into()])),
        &[],
    )
    .expect("wildcard in development");
    let e = err(
        &edited(|d| {
            d["api"]["cors_allowed_origins"] = toml::Value::Array(vec!["https://desk.example.com/app".into()]);
        }),
        &[],
    );
    assert!(e.starts_with("api.cors_allowed_origins[0]:"), "{e}");
    // RS256 without a public key variable; HS256 with one.
    let e = err(
        &edited(|d| {
            let a = d["auth"].as_table_mut().expect("auth");
            a.insert("algorithm".into(), "RS256".into());
            a.remove("secret_env");
            a.remove("dev_key_file");
        }),
        &[],
    );
    assert!(e.starts_with("auth.public_key_env:"), "{e}");
    let e = err(
        &edited(|d| {
            d["auth"]
                .as_table_mut()
                .expect("auth")
                .insert("public_key_env".into(), "SBZ_X".into());
        }),
        &[],
    );
    assert!(
        e.starts_with("auth.public_key_env:") && e.contains("only for RS256/EdDSA"),
        "{e}"
    );
    let e = err(
        &edited(|d| d["auth"]["algorithm"] = toml::Value::String("none".into())),
        &[],
    );
    assert!(e.contains("algorithm"), "{e}");
    // Services: known account, unique key ids, some operations, known operations.
    let service = |account: &str, key_id: &str, ops: &str| -> toml::Value {
        toml::Value::Table(
            toml::from_str(&format!(
                r#"
                name = "algo"
                key_id = "{key_id}"
                secret_env = "SBZ_SVC"
                account = "{account}"
                operations = {ops}
                "#
            ))
            .expect("toml"),
        )
    };
    for (services, key) in [
        (
            vec![service("mallory", "k1", r#"["read"]"#)],
            "auth.services[0].account",
        ),
        (vec![service("alice", "k1", "[]")], "auth.services[0].operations"),
        (
            vec![
                service("alice", "k1", r#"["read"]"#),
                service("bob", "k1", r#"["read"]"#),
            ],
            "auth.services[1].key_id",
        ),
        (vec![service("alice", "k 1", r#"["read"]"#)], "auth.services[0].key_id"),
    ] {
        let e = err(
            &edited(move |d| {
                d["auth"]
                    .as_table_mut()
                    .expect("auth")
                    .insert("services".into(), toml::Value::Array(services));
            }),
            &[],
        );
        assert!(e.starts_with(key), "{key}: {e}");
    }
    let e = err(
        &edited(|d| {
            d["auth"].as_table_mut().expect("auth").insert(
                "services".into(),
                toml::Value::Array(vec![service("alice", "k1", r#"["withdraw"]"#)]),
            );
        }),
        &[],
    );
    assert!(e.contains("withdraw"), "{e}");
    // Rate limits and the audit log.
    let e = err(
        &edited(|d| d["rate_limits"]["anonymous_per_min"] = toml::Value::Integer(0)),
        &[],
    );
    assert!(e.starts_with("rate_limits.anonymous_per_min:"), "{e}");
    let e = err(
        &edited(|d| d["audit"]["path"] = toml::Value::String(String::new())),
        &[],
    );
    assert!(e.starts_with("audit.path:"), "{e}");
    let e = err(
        &edited(|d| {
            d.remove("rate_limits");
        }),
        &[],
    );
    assert!(e.contains("rate_limits"), "{e}");
}

#[test]
fn the_shipped_surveillance_thresholds_are_the_design_defaults() {
    let v = load(config::DEFAULT_TOML, &[]).expect("embedded default");
    assert_eq!(
        v.config.surveillance,
        Some(stocksblitz_engine::surveillance::SurveillanceConfig::design_defaults())
    );
    // It needs order entry.
    let e = err(
        &edited(|d| {
            d.insert("surveillance".into(), common::surveillance_section());
            d.remove("orders");
        }),
        &[],
    );
    assert!(e.starts_with("surveillance:"), "{e}");
    let e = err(
        &edited(|d| {
            let mut s = common::surveillance_section();
            s["max_orders_per_min"] = toml::Value::Integer(0);
            d.insert("surveillance".into(), s);
        }),
        &[],
    );
    assert!(e.starts_with("surveillance.max_orders_per_min:"), "{e}");
}

/// `[api.connections]`, `ws_write_timeout_ms` and `[api.tls]`: each bad value names its
/// key; production refuses plain HTTP on a public address unless a TLS proxy is
/// declared (hsts); overrides reach the sub-table.
#[test]
fn connection_limits_and_tls_are_checked() {
    let tls = |cert: &str, key: &str| {
        let (cert, key) = (cert.to_owned(), key.to_owned());
        move |d: &mut toml::Table| {
            let mut t = toml::Table::new();
            t.insert("cert_path".into(), cert.into());
            t.insert("key_path".into(), key.into());
            d["api"]
                .as_table_mut()
                .unwrap()
                .insert("tls".into(), toml::Value::Table(t));
        }
    };
    let public_production = |d: &mut toml::Table| {
        d["api"]["listen"] = "0.0.0.0:8080".into();
        d["api"]["environment"] = "production".into();
        d["api"]["hsts"] = false.into();
        d["api"]["cors_allowed_origins"] = toml::Value::Array(vec!["https://desk.example.com".into()]);
    };
    let cases: Vec<(String, &str)> = vec![
        (
            edited(|d| d["api"]["connections"]["max_connections"] = 0.into()),
            "api.connections.max_connections",
        ),
        (
            edited(|d| {
                d["api"]["connections"]["max_connections"] = 10.into();
                d["api"]["connections"]["max_connections_per_address"] = 11.into();
            }),
            "api.connections.max_connections_per_address",
        ),
        (
            edited(|d| d["api"]["connections"]["header_read_timeout_ms"] = 10.into()),
            "api.connections.header_read_timeout_ms",
        ),
        (
            edited(|d| d["api"]["connections"]["idle_timeout_secs"] = 5.into()),
            "api.connections.idle_timeout_secs",
        ),
        (
            edited(|d| d["api"]["connections"]["max_header_bytes"] = 100.into()),
            "api.connections.max_header_bytes",
        ),
        (
            edited(|d| {
                d["api"]["connections"]
                    .as_table_mut()
                    .unwrap()
                    .insert("max_sockets".into(), 1.into());
            }),
            "max_sockets",
        ),
        (
            edited(|d| d["api"]["ws_write_timeout_ms"] = 0.into()),
            "api.ws_write_timeout_ms",
        ),
        (edited(tls("", "/k.pem")), "api.tls.cert_path"),
        (edited(tls("/c.pem", "")), "api.tls.key_path"),
        (edited(public_production), "api.tls"),
    ];
    for (text, key) in cases {
        let e = err(&text, &[]);
        assert!(e.contains(key), "expected {key} in: {e}");
    }
    // Development may serve plain HTTP anywhere; a missing [api.connections] is named.
    assert!(load(&edited(|d| d["api"]["listen"] = "0.0.0.0:8080".into()), &[]).is_ok());
    let e = err(
        &edited(|d| {
            d["api"].as_table_mut().unwrap().remove("connections");
        }),
        &[],
    );
    assert!(e.contains("connections"), "{e}");
    // Production on a public address passes this check with [api.tls] or with hsts (a
    // TLS proxy in front): what stops it then is the development token algorithm.
    for edit in [
        Box::new(move |d: &mut toml::Table| {
            public_production(d);
            tls("/c.pem", "/k.pem")(d);
        }) as Box<dyn FnOnce(&mut toml::Table)>,
        Box::new(move |d: &mut toml::Table| {
            public_production(d);
            d["api"]["hsts"] = true.into();
        }),
    ] {
        let e = err(&edited(edit), &[]);
        assert!(e.contains("auth.algorithm"), "{e}");
    }
    let v = load(&base(), &[("STOCKSBLITZ_API_CONNECTIONS_MAX_CONNECTIONS", "777")]).expect("override");
    assert_eq!(v.config.api.connections.max_connections, 777);
    assert!(v.config.api.tls.is_none(), "plain HTTP by default");
}

#[test]
fn auth_limit_and_audit_aggregation_keys_are_validated_and_required() {
    for (section, key, bad) in [
        ("auth", "max_token_lifetime_secs", 59),
        ("auth", "max_token_lifetime_secs", 31_622_401),
        ("rate_limits", "auth_failures_per_min", 0),
        ("rate_limits", "ws_auth_failures_per_connection", 0),
        ("rate_limits", "loopback_public_per_min", 1_000_001),
        ("audit", "auth_failure_interval_secs", 0),
        ("audit", "auth_failure_sources", 0),
    ] {
        let e = err(&edited(|d| d[section][key] = toml::Value::Integer(bad)), &[]);
        assert!(e.starts_with(&format!("{section}.{key}:")), "{key} = {bad}: {e}");
        let e = err(
            &edited(|d| {
                d[section].as_table_mut().expect("table").remove(key);
            }),
            &[],
        );
        assert!(e.contains(key), "{key} missing: {e}");
    }
    // 0 turns the development loopback tier off.
    let v = load(
        &edited(|d| d["rate_limits"]["loopback_public_per_min"] = toml::Value::Integer(0)),
        &[],
    )
    .expect("valid");
    assert_eq!(v.config.rate_limits.loopback_public_per_min, 0);
}

/// What each venue needs of its feed and instruments (checked by the venue itself,
/// `venue::Protocol`) is refused with the same key and message as ever.
#[test]
fn venue_requirements_name_their_key() {
    let cases: Vec<(String, &str)> = vec![
        (
            edited(|d| {
                d["feeds"][0]["live"].as_table_mut().unwrap().remove("rest_url");
            }),
            "feeds[0].live.rest_url: required for binance (book snapshots)",
        ),
        (
            edited(|d| {
                let live = d["feeds"][1]["live"].as_table_mut().unwrap();
                live.remove("rest_url");
                live.insert("audit_interval_secs".into(), 30.into());
            }),
            "feeds[1].live.rest_url: required for coinbase book audits",
        ),
        (
            edited(|d| d["instruments"][3]["venue_symbol"] = "RELIANCE".into()),
            "instruments[3].venue_symbol: a Kite instrument's venue_symbol must be its numeric instrument token",
        ),
        (
            edited(|d| d["instruments"][4]["venue_symbol"] = "4294967296".into()),
            "instruments[4].venue_symbol: a Kite instrument's venue_symbol must be its numeric instrument token",
        ),
    ];
    for (text, expected) in cases {
        let msg = err(&text, &[]);
        assert!(msg.starts_with(expected), "expected {expected:?}, got: {msg}");
    }
    // Without audits a Coinbase feed needs no REST URL.
    let no_audits = edited(|d| {
        let live = d["feeds"][1]["live"].as_table_mut().unwrap();
        live.remove("rest_url");
        live.insert("audit_interval_secs".into(), 0.into());
    });
    assert!(load(&no_audits, &[]).is_ok());
}

/// Every idle strategy section (the engine's, the fan-outs', the journal snapshot
/// thread's, the QuestDB sink's, the Redis publisher's): a bad value is refused naming
/// its key, an unknown key is refused, an absent optional section takes its default,
/// and the environment overrides the new longest-sleep key.
#[test]
fn idle_strategy_sections_are_validated() {
    use stocksblitz_engine::idle::{IdleConfig, IdleKind};
    let questdb: toml::Table = toml::from_str(
        "url = \"http://127.0.0.1:9\"\nprotocol_version = 2\ncreate_tables = false\nbatch_rows = 100\n\
         flush_interval_ms = 100\nmemory_rows = 1000\nspill_dir = \"data/spill\"\nretry_initial_ms = 100\n\
         retry_max_ms = 1000\nrequest_timeout_ms = 1000\norders = false\n",
    )
    .expect("questdb table");
    let redis: toml::Table = toml::from_str(
        "url = \"redis://127.0.0.1:6379/0\"\nquote_ttl_secs = 60\nquote_interval_ms = 100\n\
         idempotency_ttl_secs = 86400\nchannel = \"sbz:md\"\ntimeout_ms = 500\n",
    )
    .expect("redis table");
    let with_stores = |edit: &dyn Fn(&mut toml::Table)| {
        edited(|d| {
            d.insert("questdb".into(), toml::Value::Table(questdb.clone()));
            d.insert("redis".into(), toml::Value::Table(redis.clone()));
            edit(d);
        })
    };
    // Absent: the defaults (the sink and publisher sleep 1 ms, snapshots every 100 ms).
    let v = load(
        &with_stores(&|d| {
            d["orders"]["journal"]
                .as_table_mut()
                .expect("journal")
                .remove("snapshot_idle");
        }),
        &[],
    )
    .expect("valid without idle sections");
    assert_eq!(
        v.questdb.as_ref().expect("questdb").idle,
        IdleConfig::parked(1_000, 1_000)
    );
    assert_eq!(v.redis.as_ref().expect("redis").idle, IdleConfig::parked(1_000, 1_000));
    assert_eq!(
        v.orders.as_ref().expect("orders").journal.snapshot_idle,
        IdleConfig::parked(100_000, 100_000)
    );
    let idle = |park: i64, max: i64| {
        let mut t = toml::Table::new();
        t.insert("strategy".into(), "spin-then-park".into());
        t.insert("spin_iterations".into(), 3.into());
        t.insert("yield_iterations".into(), 4.into());
        t.insert("park_micros".into(), park.into());
        t.insert("max_park_micros".into(), max.into());
        toml::Value::Table(t)
    };
    type Section = fn(&mut toml::Table) -> &mut toml::Table;
    let sections: [(&str, Section); 5] = [
        ("engine.idle", |d| d["engine"].as_table_mut().expect("engine")),
        ("api.fanout_idle", |d| d["api"].as_table_mut().expect("api")),
        ("orders.journal.snapshot_idle", |d| {
            d["orders"]["journal"].as_table_mut().expect("journal")
        }),
        ("questdb.idle", |d| d["questdb"].as_table_mut().expect("questdb")),
        ("redis.idle", |d| d["redis"].as_table_mut().expect("redis")),
    ];
    for (key, table) in sections {
        let leaf = key.rsplit('.').next().expect("leaf");
        // Set: taken as written.
        let v = load(
            &with_stores(&|d| drop(table(d).insert(leaf.into(), idle(70, 900)))),
            &[],
        )
        .expect(key);
        let got = match key {
            "engine.idle" => v.config.engine.idle,
            "api.fanout_idle" => v.config.api.fanout_idle,
            "orders.journal.snapshot_idle" => v.orders.as_ref().expect("orders").journal.snapshot_idle,
            "questdb.idle" => v.questdb.as_ref().expect("questdb").idle,
            _ => v.redis.as_ref().expect("redis").idle,
        };
        let want = IdleConfig {
            strategy: IdleKind::SpinThenPark,
            spin_iterations: 3,
            yield_iterations: 4,
            park_micros: 70,
            max_park_micros: 900,
        };
        assert_eq!(got, want, "{key}");
        // Bad values name their key.
        for (park, max, bad) in [
            (0, 900, "park_micros"),
            (100_001, 900, "park_micros"),
            (70, 100_001, "max_park_micros"),
        ] {
            let e = err(
                &with_stores(&|d| drop(table(d).insert(leaf.into(), idle(park, max)))),
                &[],
            );
            assert!(
                e.starts_with(&format!("{key}.{bad}")),
                "{key} park {park} max {max}: {e}"
            );
        }
        // Unknown keys are refused by name.
        let e = err(
            &with_stores(&|d| {
                let mut t = idle(70, 900);
                if let toml::Value::Table(t) = &mut t {
                    t.insert("max_park".into(), 1.into());
                }
                table(d).insert(leaf.into(), t);
            }),
            &[],
        );
        assert!(e.contains("max_park"), "{key}: {e}");
    }
    let v = load(&base(), &[("STOCKSBLITZ_ENGINE_IDLE_MAX_PARK_MICROS", "2500")]).expect("override");
    assert_eq!(v.config.engine.idle.max_park_micros, 2_500);
}
