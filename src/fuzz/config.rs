//! The configuration loader: TOML text over the quickstart defaults, and
//! `MSGD_*` environment variables, through the same nesting checks,
//! figment and validation as `config::load`.
//!
//! Input: TOML text, then optionally a NUL byte and `NAME=value` lines
//! standing for the environment (the process environment is never
//! touched: tests run in parallel). The variables go through figment's own
//! value parser and key nesting, as its `Env` provider does.

use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use figment::Figment;
use rand::Rng as _;

use super::gen::{number, pick, word};
use super::{Rng, Target};
use crate::config::{self, Config, QUICKSTART};

pub(crate) static CONFIG: Target = Target {
    name: "config",
    check: check_config,
    generate: gen_config,
    deep: deep_config,
    cases: 200,
    dict: &[
        b"[",
        b"]",
        b"{",
        b"}",
        b"[[listener]]\n",
        b"[listener.x]\n",
        b"bind = [\"127.0.0.1:1\"]\n",
        b"\"",
        b"'''",
        b"#",
        b"\0MSGD_SERVER__HOSTNAME=",
        b"\nMSGD_A__B=[[1]]",
        b"= 18446744073709551616\n",
        b"= 1e400\n",
        b"= 1979-05-27T07:32:00Z\n",
    ],
};

fn check_config(input: &[u8]) {
    let (text, env) = match input.iter().position(|&b| b == 0) {
        Some(p) => (&input[..p], &input[p + 1..]),
        None => (input, &[][..]),
    };
    let text = String::from_utf8_lossy(text);
    let vars: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if config::check_nesting("fuzz.toml", &text).is_err()
        || !config::check_env(vars.clone()).is_empty()
    {
        return;
    }
    let mut fig = Figment::new()
        .merge(Toml::string(QUICKSTART))
        .merge(Toml::string(&text));
    for (k, v) in &vars {
        // What Env::prefixed("MSGD_").split("__") does with one variable.
        let Some(rest) = k.get(5..).filter(|_| k[..5].eq_ignore_ascii_case("MSGD_")) else {
            continue;
        };
        if !k.contains("__") || rest.is_empty() {
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        let value: Value = v.parse().unwrap_or_else(|_| Value::from(v.clone()));
        fig = fig.merge(Serialized::defaults(figment::util::nest(&key, value)));
    }
    if let Ok(c) = fig.extract::<Config>() {
        let _ = config::validate(&c);
    }
}

fn gen_value(rng: &mut Rng, depth: usize) -> String {
    match rng.gen_range(0..9) {
        0 if depth < 4 => format!(
            "[{}, {}]",
            gen_value(rng, depth + 1),
            gen_value(rng, depth + 1)
        ),
        1 if depth < 4 => format!("{{ {} = {} }}", word(rng), gen_value(rng, depth + 1)),
        2 => number(rng),
        3 => "true".into(),
        4 => format!(
            "\"{}\"",
            pick(
                rng,
                &[
                    "127.0.0.1:1",
                    "[::1]:2",
                    "none",
                    "starttls",
                    "x\\u0000",
                    "\\q"
                ]
            )
        ),
        5 => "1979-05-27T07:32:00Z".into(),
        6 => "-1.5e308".into(),
        _ => format!("\"{}\"", word(rng)),
    }
}

fn gen_config(rng: &mut Rng) -> Vec<u8> {
    let sections = [
        "server",
        "store",
        "imap",
        "pop3",
        "smtp",
        "mmp",
        "queue",
        "listener.imap",
        "listener.x",
        "directory",
        "log",
        "limits",
    ];
    let keys = [
        "hostname",
        "bind",
        "protocol",
        "tls",
        "max_line",
        "timeout",
        "data",
        "max_message_size",
        "x",
        "relay",
        "partitions",
    ];
    let mut out = String::new();
    for _ in 0..rng.gen_range(0..5) {
        out.push_str(&format!("[{}]\n", pick(rng, &sections)));
        for _ in 0..rng.gen_range(0..4) {
            out.push_str(&format!("{} = {}\n", pick(rng, &keys), gen_value(rng, 0)));
        }
    }
    if rng.gen() {
        out.push('\0');
        for _ in 0..rng.gen_range(1..4) {
            out.push_str(&format!(
                "MSGD_{}__{}={}\n",
                pick(rng, &sections).to_uppercase().replace('.', "__"),
                pick(rng, &keys).to_uppercase(),
                gen_value(rng, 0)
            ));
        }
    }
    out.into_bytes()
}

fn deep_config() -> Vec<Vec<u8>> {
    let n = 100_000;
    vec![
        format!("x = {}1{}\n", "[".repeat(n), "]".repeat(n)).into_bytes(),
        format!("x = {}\n", "{ a = ".repeat(n)).into_bytes(),
        format!("[{}]\n", vec!["a"; n].join(".")).into_bytes(),
        format!("{} = 1\n", vec!["a"; n].join(".")).into_bytes(),
        "[[a]]\n".repeat(n).into_bytes(),
        format!("\0MSGD_SERVER__HOSTNAME={}\n", "[".repeat(n)).into_bytes(),
        format!("\0MSGD_SERVER__HOSTNAME={}\n", "{a=".repeat(n)).into_bytes(),
        format!("\0MSGD_{}=1\n", vec!["A"; n / 4].join("__")).into_bytes(),
        format!("x = \"{}\"\n", "[".repeat(n)).into_bytes(),
        format!("x = \"{}\"\n", "y".repeat(1 << 20)).into_bytes(),
    ]
}
