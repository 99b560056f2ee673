use super::*;

fn blob(p: &str) -> String {
    format!("B-{p}")
}

fn props(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

const NESTED: &[u8] = b"From: \"Joe Q.\" <joe@example.com>\r\n\
To: a@example.com, Team: b@example.com, c@example.com;\r\n\
Subject: =?UTF-8?Q?h=C3=A9llo?=\r\n\
Date: Tue, 1 Dec 2026 10:00:00 +0100\r\n\
Message-ID: <m1@example.com>\r\n\
References: <a@x> <b@x>\r\n\
List-Unsubscribe: <mailto:u@example.com>, <https://example.com/u>\r\n\
Content-Type: multipart/mixed; boundary=outer\r\n\
\r\n\
--outer\r\n\
Content-Type: multipart/alternative; boundary=inner\r\n\
\r\n\
--inner\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
plain body text\r\n\
--inner\r\n\
Content-Type: text/html\r\n\
\r\n\
<p>html body</p>\r\n\
--inner--\r\n\
--outer\r\n\
Content-Type: application/pdf; name=doc.pdf\r\n\
Content-Disposition: attachment; filename=doc.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
SGVsbG8=\r\n\
--outer--\r\n";

#[test]
fn rfc8621_4_1_2_header_property_syntax_and_allowed_forms() {
    let p = HeaderProp::parse("header:X-Foo:asText:all").unwrap();
    assert_eq!(
        (p.name.as_str(), p.form, p.all),
        ("X-Foo", Form::Text, true)
    );
    assert_eq!(HeaderProp::parse("header:Subject").unwrap().form, Form::Raw);
    assert!(HeaderProp::parse("header:From:asAddresses").is_some());
    assert!(HeaderProp::parse("header:Subject:asDate").is_none());
    assert!(HeaderProp::parse("header:From:asText").is_none());
    assert!(HeaderProp::parse("header:X:asNope").is_none());
    assert!(HeaderProp::parse("header:X:all:asText").is_none());
    assert!(HeaderProp::parse("header:").is_none());
}

#[test]
fn rfc8621_4_1_2_header_forms() {
    let p = Parsed::new(NESTED);
    let h = p.header();
    let get = |s: &str| header_prop(h, &HeaderProp::parse(s).unwrap());
    assert_eq!(get("header:Subject"), json!(" =?UTF-8?Q?h=C3=A9llo?="));
    assert_eq!(get("header:Subject:asText"), json!("héllo"));
    assert_eq!(
        get("header:From:asAddresses"),
        json!([{"name": "Joe Q.", "email": "joe@example.com"}])
    );
    let grouped = get("header:To:asGroupedAddresses");
    assert_eq!(grouped[1]["name"], json!("Team"));
    assert_eq!(grouped[1]["addresses"].as_array().unwrap().len(), 2);
    assert_eq!(get("header:To:asAddresses").as_array().unwrap().len(), 3);
    assert_eq!(get("header:References:asMessageIds"), json!(["a@x", "b@x"]));
    assert_eq!(
        get("header:Date:asDate"),
        json!("2026-12-01T10:00:00+01:00")
    );
    assert_eq!(
        get("header:List-Unsubscribe:asURLs"),
        json!(["mailto:u@example.com", "https://example.com/u"])
    );
    assert_eq!(get("header:X-Missing"), Value::Null);
    assert_eq!(get("header:X-Missing:all"), json!([]));
    assert_eq!(
        get("header:Message-ID:asMessageIds:all"),
        json!([["m1@example.com"]])
    );
}

#[test]
fn rfc8621_4_1_4_body_structure_of_nested_multiparts() {
    let p = Parsed::new(NESTED);
    let bs = p.body_structure(&props(&["partId", "blobId", "type", "size"]), &blob);
    assert_eq!(bs["type"], json!("multipart/mixed"));
    assert_eq!(bs["partId"], Value::Null);
    let alt = &bs["subParts"][0];
    assert_eq!(alt["type"], json!("multipart/alternative"));
    assert_eq!(alt["subParts"][0]["partId"], json!("1.1"));
    assert_eq!(alt["subParts"][1]["type"], json!("text/html"));
    assert_eq!(bs["subParts"][1]["partId"], json!("2"));
    assert_eq!(bs["subParts"][1]["blobId"], json!("B-2"));
    assert_eq!(bs["subParts"][1]["size"], json!(5));
    let text = p.text_body(&props(&["partId", "type", "charset"]), &blob);
    assert_eq!(
        text,
        json!([{"partId": "1.1", "type": "text/plain", "charset": "utf-8"}])
    );
    let html = p.html_body(&props(&["partId"]), &blob);
    assert_eq!(html, json!([{"partId": "1.2"}]));
    let att = p.attachments(&props(&["partId", "name", "disposition"]), &blob);
    assert_eq!(
        att,
        json!([{"partId": "2", "name": "doc.pdf", "disposition": "attachment"}])
    );
    assert!(p.has_attachment());
}

#[test]
fn rfc8621_4_2_body_values_and_truncation() {
    let p = Parsed::new(NESTED);
    let opts = BodyOptions {
        fetch_text: true,
        max_bytes: 5,
        ..Default::default()
    };
    let v = p.body_values(&opts);
    assert_eq!(v["1.1"]["value"], json!("plain"));
    assert_eq!(v["1.1"]["isTruncated"], json!(true));
    assert!(v.get("1.2").is_none());
    let all = p.body_values(&BodyOptions {
        fetch_all: true,
        ..Default::default()
    });
    assert_eq!(all["1.2"]["isTruncated"], json!(false));
    assert!(all["1.2"]["value"].as_str().unwrap().contains("html body"));
    // Cut on a character boundary: never half a UTF-8 sequence.
    assert_eq!(truncate("héllo", 2), ("h", true));
}

#[test]
fn single_part_message_is_part_1() {
    let p = Parsed::new(b"Subject: x\r\n\r\nbody\r\n");
    let bs = p.body_structure(&props(&["partId", "type", "charset"]), &blob);
    assert_eq!(bs["partId"], json!("1"));
    assert_eq!(bs["type"], json!("text/plain"));
    assert_eq!(bs["charset"], json!("us-ascii"));
    assert_eq!(bs["subParts"], Value::Null);
    assert!(!p.has_attachment());
}

#[test]
fn hostile_depth_is_bounded() {
    // 20,000 nested multiparts, on a small stack: rendering must not
    // recurse with the input's depth.
    let mut m = Vec::new();
    m.extend_from_slice(b"Subject: deep\r\n");
    for i in 0..20_000 {
        m.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n").as_bytes(),
        );
    }
    m.extend_from_slice(b"Content-Type: text/plain\r\n\r\nleaf\r\n");
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let p = Parsed::new(&m);
            let bs = p.body_structure(&props(&["partId", "type", "headers"]), &blob);
            let _ = p.text_body(&props(&["partId"]), &blob);
            let _ = p.body_values(&BodyOptions {
                fetch_all: true,
                ..Default::default()
            });
            bs.to_string().len()
        })
        .unwrap();
    assert!(handle.join().unwrap() > 0);
}
