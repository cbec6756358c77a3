//! One fixture per validation rule, each asserting the message names the field; matching.

use super::*;

const GOOD: &str = r#"
[[rule]]
name = "reserve-per-buyer"
method = "POST"
path = "/api/v1/reservations"
key = ["sub", "sku"]
rate = 10
burst = 5

[[rule]]
name = "stock-per-ip"
path = "/api/v1/stock/{sku}"
key = ["ip", "sku"]
rate = 600
period_secs = 60
burst = 50
shadow = true
"#;

#[test]
fn the_shipped_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ratelimits.toml");
    let rules = load(&path).unwrap();
    assert!(!rules.is_empty());
}

#[test]
fn parses_and_matches() {
    let rules = parse(GOOD, "good").unwrap();
    let reserve = &rules[0];
    assert_eq!(reserve.interval, Duration::from_millis(100));
    assert_eq!(
        reserve.matches(&Method::POST, "/api/v1/reservations"),
        Some(None)
    );
    assert_eq!(reserve.matches(&Method::GET, "/api/v1/reservations"), None);
    assert!(reserve.needs_body_sku());
    let stock = &rules[1];
    assert_eq!(
        stock.matches(&Method::GET, "/api/v1/stock/HOT"),
        Some(Some("HOT"))
    );
    assert_eq!(stock.matches(&Method::GET, "/api/v1/stock/HOT/x"), None);
    let get_only = parse(
        "[[rule]]\nname = \"g\"\nmethod = \"GET\"\npath = \"/a\"\nkey = [\"ip\"]\nrate = 1\nburst = 1\n",
        "get",
    )
    .unwrap();
    assert_eq!(
        get_only[0].matches(&Method::HEAD, "/a"),
        Some(None),
        "HEAD is a GET"
    );
    assert_eq!(get_only[0].matches(&Method::POST, "/a"), None);
    let head = "[[rule]]\nname = \"h\"\nmethod = \"HEAD\"\npath = \"/a\"\nkey = [\"ip\"]\nrate = 1\nburst = 1\n";
    let err = parse(head, "head").unwrap_err().to_string();
    assert!(err.contains("method"), "{err}");
    assert_eq!(stock.matches(&Method::GET, "/api/v1/stock/"), None);
    assert!(!stock.needs_body_sku() && stock.shadow);
    let any = parse(
        "[[rule]]\nname = \"all\"\npath = \"/api/v1/*\"\nkey = [\"ip\"]\nrate = 1\nburst = 1\n",
        "any",
    )
    .unwrap();
    assert_eq!(any[0].matches(&Method::DELETE, "/api/v1/a/b"), Some(None));
    assert_eq!(any[0].matches(&Method::GET, "/healthz"), None);
}

#[test]
fn unknown_fields_are_refused_with_their_name() {
    let text = GOOD.replace("burst = 5", "burst = 5\nburts = 6");
    let message = parse(&text, "f").unwrap_err().to_string();
    assert!(message.contains("burts"), "{message}");
}

#[test]
fn each_rule_names_its_field() {
    let base =
        "name = \"r\"\npath = \"/api/v1/stock/{sku}\"\nkey = [\"ip\"]\nrate = 1\nburst = 1\n";
    let cases = [
        (base.replace("\"r\"", "\"a b\""), "name"),
        (format!("{base}method = \"BAD METHOD\"\n"), "method"),
        (base.replace("/api/v1/stock/{sku}", "api"), "path"),
        (base.replace("/api/v1/stock/{sku}", "/a/*/b"), "path"),
        (base.replace("/api/v1/stock/{sku}", "/a/{x"), "path"),
        (base.replace("[\"ip\"]", "[]"), "key"),
        (base.replace("[\"ip\"]", "[\"cookie\"]"), "key"),
        (base.replace("[\"ip\"]", "[\"ip\", \"ip\"]"), "key"),
        (
            base.replace("/api/v1/stock/{sku}", "/api/v1/orders")
                .replace("[\"ip\"]", "[\"sku\"]"),
            "key",
        ),
        (base.replace("rate = 1", "rate = 0"), "rate"),
        (format!("{base}period_secs = 0\n"), "period_secs"),
        (base.replace("burst = 1", "burst = 0"), "burst"),
        (format!("{base}phase = \"early\"\n"), "phase"),
        (
            format!("{base}phase = \"before_auth\"\n").replace("[\"ip\"]", "[\"sub\"]"),
            "key",
        ),
        (
            format!("{base}phase = \"auth_failure\"\n").replace("[\"ip\"]", "[\"ip\", \"sub\"]"),
            "key",
        ),
        (
            format!("{base}method = \"POST\"\nphase = \"before_auth\"\n")
                .replace("/api/v1/stock/{sku}", "/api/v1/reservations")
                .replace("[\"ip\"]", "[\"ip\", \"sku\"]"),
            "key",
        ),
    ];
    for (rule, field) in cases {
        let text = format!("[[rule]]\n{rule}");
        let message = parse(&text, "f").unwrap_err().to_string();
        // An unknown phase is the parser's error: it names the field, not the rule index.
        let named = message.contains(&format!("field `{field}`"))
            || field == "phase" && message.contains("unknown variant `early`");
        assert!(named, "{text} → {message}");
    }
    let twice = format!("[[rule]]\n{base}[[rule]]\n{base}");
    let message = parse(&twice, "f").unwrap_err().to_string();
    assert!(message.contains("rule[1] field `name`"), "{message}");
}

#[test]
fn phases_are_read_and_default_to_after_auth() {
    let text = format!(
        "{GOOD}\n[[rule]]\nname = \"bad-tokens\"\npath = \"/api/v1/*\"\nkey = [\"ip\"]\n\
         rate = 1\nburst = 10\nphase = \"auth_failure\"\n\
         [[rule]]\nname = \"catalog\"\npath = \"/api/v1/products/*\"\nkey = [\"ip\"]\n\
         rate = 1\nburst = 10\nphase = \"before_auth\"\n"
    );
    let rules = parse(&text, "f").unwrap();
    let phases: Vec<Phase> = rules.iter().map(|r| r.phase).collect();
    assert_eq!(
        phases,
        [
            Phase::AfterAuth,
            Phase::AfterAuth,
            Phase::AuthFailure,
            Phase::BeforeAuth
        ]
    );
    let names: Vec<&str> = rules.iter().map(|r| r.phase.name()).collect();
    assert_eq!(
        names,
        ["after_auth", "after_auth", "auth_failure", "before_auth"]
    );
}

#[test]
fn a_file_that_names_no_rule_is_refused_unless_it_says_so() {
    // What the watch reads between a writer's truncate and its write.
    for text in ["", "\n", "# all rules removed\n"] {
        let message = parse(text, "f").unwrap_err().to_string();
        assert!(
            message.contains("names no [[rule]]; to run without limits write `rule = []`"),
            "{text:?} → {message}"
        );
    }
    assert!(parse("rule = []\n", "f").unwrap().is_empty());
}
