//! Tests for ENVELOPE, BODYSTRUCTURE and section extraction, named after the
//! RFC behaviour they check. Expected wire forms are what imap-codec encodes.

use std::num::NonZeroU32;

use imap_codec::decode::Decoder;
use imap_codec::encode::Encoder;
use imap_codec::{CommandCodec, ResponseCodec};
use imap_types::command::CommandBody;
use imap_types::core::Vec1;
use imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName};
use imap_types::response::{Data, Response};

use super::*;

/// Converts a sample written with `\n` to CRLF line ends.
pub(crate) fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

/// The FETCH response line for one data item, as the session would send it.
fn wire(item: MessageDataItem<'static>) -> String {
    let resp = Response::Data(Data::Fetch {
        seq: NonZeroU32::MIN,
        items: Vec1::from(item),
    });
    let bytes = ResponseCodec::default().encode(&resp).dump();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn env_wire(msg: &[u8]) -> String {
    wire(MessageDataItem::Envelope(envelope(msg)))
}

fn bs_wire(msg: &[u8]) -> String {
    wire(MessageDataItem::BodyStructure(body_structure(msg, true)))
}

fn body_wire(msg: &[u8]) -> String {
    wire(MessageDataItem::Body(body_structure(msg, false)))
}

/// The section of `FETCH 1 BODY[<spec>]` as imap-codec parses it.
fn sec(spec: &str) -> Option<Section<'static>> {
    let line = format!("A FETCH 1 BODY[{spec}]\r\n");
    let (_, cmd) = CommandCodec::default()
        .decode_static(line.as_bytes())
        .unwrap_or_else(|e| panic!("bad section {spec}: {e:?}"));
    match cmd.body {
        CommandBody::Fetch {
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(names),
            ..
        } => match names.into_iter().next() {
            Some(MessageDataItemName::BodyExt { section, .. }) => section,
            other => panic!("unexpected item {other:?}"),
        },
        other => panic!("unexpected command {other:?}"),
    }
}

fn fetch(msg: &[u8], spec: &str) -> String {
    String::from_utf8_lossy(&section(msg, sec(spec).as_ref())).into_owned()
}

pub(crate) const MIXED: &str = "From: Alice <alice@example.org>
To: Bob <bob@example.net>
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from Alice
Date: Tue, 01 Oct 2024 10:00:00 +0200
Message-ID: <m1@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=\"outer\"

This is the preamble.
--outer
Content-Type: multipart/alternative; boundary=alt

--alt
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Caf=C3=A9 au lait
--alt
Content-Type: text/html; charset=utf-8

<p>Caf&eacute; <b>au</b> lait</p>
--alt--
--outer
Content-Type: application/pdf; name=\"report.pdf\"
Content-Disposition: attachment; filename=\"report.pdf\"
Content-Transfer-Encoding: base64
Content-ID: <pdf1@example.org>
Content-Description: The report

JVBERi0xLjQKJcOkw7zDtsOfCg==
--outer
Content-Type: message/rfc822

From: Carol <carol@example.com>
To: undisclosed-recipients:;
Subject: inner
Date: Wed, 02 Oct 2024 11:00:00 +0000

Inner body line 1
Inner body line 2
--outer--
Epilogue.
";

/// RFC 3501 section 8 sample message (headers as in the example response).
const RFC3501_SAMPLE: &str = "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)
From: Terry Gray <gray@cac.washington.edu>
Subject: IMAP4rev1 WG mtg summary and minutes
To: imap@cac.washington.edu
cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>
Message-Id: <B27397-0100000@cac.washington.edu>
MIME-Version: 1.0
Content-Type: TEXT/PLAIN; CHARSET=US-ASCII

Hello Joe, do you think we can meet at 3:30 tomorrow?
Regards
";

#[test]
fn rfc3501_8_envelope_of_sample_message() {
    assert_eq!(
        env_wire(&crlf(RFC3501_SAMPLE)),
        "* 1 FETCH (ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \
         \"IMAP4rev1 WG mtg summary and minutes\" \
         ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
         ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
         ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) \
         ((NIL NIL \"imap\" \"cac.washington.edu\")) \
         ((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\")) \
         NIL NIL \"<B27397-0100000@cac.washington.edu>\"))\r\n"
    );
}

#[test]
fn rfc3501_8_body_of_sample_message() {
    // Body: 53 + 2 + 7 + 2 octets, 2 lines.
    assert_eq!(
        body_wire(&crlf(RFC3501_SAMPLE)),
        "* 1 FETCH (BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 64 2))\r\n"
    );
}

#[test]
fn rfc3501_7_4_2_envelope_strings_are_not_decoded() {
    let m = crlf(
        "From: =?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from
 Alice
Date: Tue, 01 Oct 2024 10:00:00 +0200

x
",
    );
    assert_eq!(
        env_wire(&m),
        "* 1 FETCH (ENVELOPE (\"Tue, 01 Oct 2024 10:00:00 +0200\" \
         \"=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from Alice\" \
         ((\"=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=\" NIL \"keld\" \"dkuug.dk\")) \
         ((\"=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=\" NIL \"keld\" \"dkuug.dk\")) \
         ((\"=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=\" NIL \"keld\" \"dkuug.dk\")) \
         NIL NIL NIL NIL NIL))\r\n"
    );
}

#[test]
fn rfc3501_7_4_2_envelope_group_syntax_uses_nil_markers() {
    // RFC 5322 appendix A.1.3.
    let m = crlf(
        "From: Pete <pete@silly.example>
To: A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;
Cc: Undisclosed recipients:;

x
",
    );
    let e = envelope(&m);
    let w = wire(MessageDataItem::Envelope(e.clone()));
    assert!(
        w.contains(
            "((NIL NIL \"A Group\" NIL)(\"Ed Jones\" NIL \"c\" \"a.test\")\
             (NIL NIL \"joe\" \"where.test\")(\"John\" NIL \"jdoe\" \"one.test\")\
             (NIL NIL NIL NIL)) ((NIL NIL \"Undisclosed recipients\" NIL)(NIL NIL NIL NIL))"
        ),
        "{w}"
    );
    assert_eq!(e.to.len(), 5);
    assert_eq!(e.cc.len(), 2);
}

#[test]
fn rfc3501_7_4_2_sender_and_reply_to_default_to_from() {
    let m = crlf(
        "From: a@example.org
Sender:
Date: x

",
    );
    let e = envelope(&m);
    assert_eq!(e.sender, e.from);
    assert_eq!(e.reply_to, e.from);
    assert_eq!(e.from.len(), 1);

    let m = crlf(
        "From: a@example.org
Sender: b@example.org
Reply-To: c@example.org

",
    );
    let e = envelope(&m);
    assert_ne!(e.sender, e.from);
    assert_ne!(e.reply_to, e.from);
}

#[test]
fn rfc3501_7_4_2_absent_fields_are_nil() {
    let m = crlf("X-Other: 1\n\nbody\n");
    assert_eq!(
        env_wire(&m),
        "* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n"
    );
    // A present but empty Subject is an empty string, not NIL.
    let m = crlf("Subject:\n\nbody\n");
    assert!(env_wire(&m).starts_with("* 1 FETCH (ENVELOPE (NIL \"\" NIL"));
}

#[test]
fn rfc3501_7_4_2_address_forms() {
    let m = crlf(
        "From: \"Joe Q. Public\" <john.q.public@example.com>
Sender: jdoe@example.org (John Doe)
Reply-To: <@route1,@route2:user@host.example>
To: \"quoted local\"@example.com, Mary Smith <mary@x.test>, root
Cc: <>
Bcc: Joe Q. Public <joe@example.com>

",
    );
    let e = envelope(&m);
    let w = wire(MessageDataItem::Envelope(e));
    assert_eq!(
        w,
        "* 1 FETCH (ENVELOPE (NIL NIL \
         ((\"Joe Q. Public\" NIL \"john.q.public\" \"example.com\")) \
         ((\"John Doe\" NIL \"jdoe\" \"example.org\")) \
         ((NIL \"@route1,@route2\" \"user\" \"host.example\")) \
         ((NIL NIL \"quoted local\" \"example.com\")(\"Mary Smith\" NIL \"mary\" \"x.test\")\
         (NIL NIL \"root\" \"MISSING_DOMAIN\")) \
         ((NIL NIL \"\" \"\")) \
         ((\"Joe Q. Public\" NIL \"joe\" \"example.com\")) NIL NIL))\r\n"
    );
}

#[test]
fn rfc3501_7_4_2_bodystructure_multipart_with_attachment_alternative_and_rfc822() {
    let m = crlf(MIXED);
    assert_eq!(
        bs_wire(&m),
        "* 1 FETCH (BODYSTRUCTURE (\
         ((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 17 1 NIL NIL NIL NIL)\
         (\"TEXT\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7BIT\" 33 1 NIL NIL NIL NIL) \
         \"alternative\" (\"boundary\" \"alt\") NIL NIL NIL)\
         (\"application\" \"pdf\" (\"name\" \"report.pdf\") \"<pdf1@example.org>\" \"The report\" \
         \"base64\" 28 NIL (\"attachment\" (\"filename\" \"report.pdf\")) NIL NIL)\
         (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 156 \
         (\"Wed, 02 Oct 2024 11:00:00 +0000\" \"inner\" ((\"Carol\" NIL \"carol\" \"example.com\")) \
         ((\"Carol\" NIL \"carol\" \"example.com\")) ((\"Carol\" NIL \"carol\" \"example.com\")) \
         ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL) \
         (\"TEXT\" \"PLAIN\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 36 2 NIL NIL NIL NIL) \
         7 NIL NIL NIL NIL) \
         \"mixed\" (\"boundary\" \"outer\") NIL NIL NIL))\r\n"
    );
}

#[test]
fn rfc3501_7_4_2_body_is_bodystructure_without_extension_data() {
    for sample in [MIXED, RFC3501_SAMPLE, DIGEST] {
        let m = crlf(sample);
        assert_eq!(
            body_structure(&m, false),
            without_extensions(body_structure(&m, true))
        );
        let (e, bs) = envelope_and_structure(&m);
        assert_eq!(e, envelope(&m));
        assert_eq!(bs, body_structure(&m, true));
    }
    assert_eq!(
        body_wire(&crlf(MIXED)),
        "* 1 FETCH (BODY (((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 17 1)\
         (\"TEXT\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7BIT\" 33 1) \"alternative\")\
         (\"application\" \"pdf\" (\"name\" \"report.pdf\") \"<pdf1@example.org>\" \"The report\" \"base64\" 28)\
         (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 156 \
         (\"Wed, 02 Oct 2024 11:00:00 +0000\" \"inner\" ((\"Carol\" NIL \"carol\" \"example.com\")) \
         ((\"Carol\" NIL \"carol\" \"example.com\")) ((\"Carol\" NIL \"carol\" \"example.com\")) \
         ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL) \
         (\"TEXT\" \"PLAIN\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 36 2) 7) \"mixed\"))\r\n"
    );
}

#[test]
fn rfc2045_5_2_missing_content_type_defaults_to_text_plain_us_ascii_7bit() {
    let m = crlf("Subject: no mime\n\nline one\nline two\n");
    assert_eq!(
        bs_wire(&m),
        "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 20 2 NIL NIL NIL NIL))\r\n"
    );
}

#[test]
fn rfc3501_7_4_2_bodystructure_keeps_case_and_raw_parameters() {
    let m = crlf(
        "Content-Type: Text/HTML; Charset=\"ISO-8859-1\" (comment);
 title*0*=us-ascii'en'This%20is; title*1*=%20fun
Content-Transfer-Encoding: Quoted-Printable

<b>x</b>",
    );
    assert_eq!(
        bs_wire(&m),
        "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"HTML\" (\"Charset\" \"ISO-8859-1\" \
         \"title*0*\" \"us-ascii'en'This%20is\" \"title*1*\" \"%20fun\") NIL NIL \
         \"Quoted-Printable\" 8 1 NIL NIL NIL NIL))\r\n"
    );
}

#[test]
fn rfc3501_7_4_2_bodystructure_disposition_language_location_md5() {
    let m = crlf(
        "Content-Type: image/png
Content-Transfer-Encoding: base64
Content-Disposition: inline; filename=\"a b.png\"; size=3
Content-Language: en, de (German)
Content-Location: http://example.com/a.png
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==

iVBO
",
    );
    assert_eq!(
        bs_wire(&m),
        "* 1 FETCH (BODYSTRUCTURE (\"image\" \"png\" NIL NIL NIL \"base64\" 6 \
         \"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"inline\" (\"filename\" \"a b.png\" \"size\" \"3\")) \
         (\"en\" \"de\") \"http://example.com/a.png\"))\r\n"
    );
}

pub(crate) const DIGEST: &str = "From: list@example.org
Subject: digest
MIME-Version: 1.0
Content-Type: multipart/digest; boundary=d

--d

From: a@example.org
Subject: one

first
--d
Content-Type: text/plain

not a message
--d--
";

#[test]
fn rfc2046_5_1_5_digest_parts_default_to_message_rfc822() {
    let bs = bs_wire(&crlf(DIGEST));
    assert!(
        bs.starts_with(
            "* 1 FETCH (BODYSTRUCTURE ((\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 42 (NIL \"one\" \
             ((NIL NIL \"a\" \"example.org\"))"
        ),
        "{bs}"
    );
    assert!(bs.contains("(\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 13 1 NIL NIL NIL NIL) \"digest\""), "{bs}");
    assert_eq!(fetch(&crlf(DIGEST), "1.1"), "first");
    assert_eq!(
        fetch(&crlf(DIGEST), "1.HEADER"),
        "From: a@example.org\r\nSubject: one\r\n\r\n"
    );
}

#[test]
fn rfc3501_6_4_5_section_part_numbers() {
    let m = crlf(MIXED);
    let cases: &[(&str, &str)] = &[
        ("1.1", "Caf=C3=A9 au lait"),
        ("1.2", "<p>Caf&eacute; <b>au</b> lait</p>"),
        ("2", "JVBERi0xLjQKJcOkw7zDtsOfCg=="),
        ("3.1", "Inner body line 1\r\nInner body line 2"),
        ("3.TEXT", "Inner body line 1\r\nInner body line 2"),
        (
            "3.HEADER",
            "From: Carol <carol@example.com>\r\nTo: undisclosed-recipients:;\r\nSubject: inner\r\n\
             Date: Wed, 02 Oct 2024 11:00:00 +0000\r\n\r\n",
        ),
        ("3.HEADER.FIELDS (subject)", "Subject: inner\r\n\r\n"),
        ("3.MIME", "Content-Type: message/rfc822\r\n\r\n"),
        (
            "1.1.MIME",
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
        ),
        // Nonexistent parts are empty.
        ("4", ""),
        ("1.3", ""),
        ("2.1", ""),
        ("2.HEADER", ""),
        ("3.2", ""),
        ("1.1.1", ""),
    ];
    for (spec, want) in cases {
        assert_eq!(fetch(&m, spec), *want, "BODY[{spec}]");
    }
    // A whole message/rfc822 part is the encapsulated message.
    assert_eq!(
        fetch(&m, "3"),
        format!("{}{}", fetch(&m, "3.HEADER"), fetch(&m, "3.TEXT"))
    );
    // A multipart part is its body with the boundaries, up to (not
    // including) the CRLF before the outer boundary.
    let p1 = fetch(&m, "1");
    assert!(p1.starts_with("--alt\r\nContent-Type: text/plain"), "{p1}");
    assert!(p1.ends_with("lait</p>\r\n--alt--"), "{p1}");
}

#[test]
fn rfc3501_6_4_5_header_text_and_whole_message() {
    let m = crlf(MIXED);
    let header = fetch(&m, "HEADER");
    let text = fetch(&m, "TEXT");
    assert!(header.ends_with("boundary=\"outer\"\r\n\r\n"));
    assert!(text.starts_with("This is the preamble.\r\n--outer\r\n"));
    assert!(text.ends_with("--outer--\r\nEpilogue.\r\n"));
    assert_eq!(format!("{header}{text}").as_bytes(), &m[..]);
    assert_eq!(section(&m, None), m);
    assert_eq!(fetch(&m, ""), String::from_utf8_lossy(&m));
}

#[test]
fn rfc3501_6_4_5_header_fields_in_message_order_with_blank_line() {
    let m = crlf(
        "Subject: first
Received: from a
 by b
From: x@example.org
subject: second
To: y@example.org

body
",
    );
    assert_eq!(
        fetch(&m, "HEADER.FIELDS (FROM SUBJECT Missing)"),
        "Subject: first\r\nFrom: x@example.org\r\nsubject: second\r\n\r\n"
    );
    assert_eq!(
        fetch(&m, "HEADER.FIELDS.NOT (subject from)"),
        "Received: from a\r\n by b\r\nTo: y@example.org\r\n\r\n"
    );
    // No match: just the blank line.
    assert_eq!(fetch(&m, "HEADER.FIELDS (X-None)"), "\r\n");
}

#[test]
fn rfc3501_6_4_5_non_multipart_part_1_is_the_body() {
    let m = crlf(RFC3501_SAMPLE);
    let body = "Hello Joe, do you think we can meet at 3:30 tomorrow?\r\nRegards\r\n";
    assert_eq!(fetch(&m, "1"), body);
    assert_eq!(fetch(&m, "TEXT"), body);
    assert_eq!(fetch(&m, "1.MIME"), fetch(&m, "HEADER"));
    assert_eq!(fetch(&m, "2"), "");
    assert_eq!(fetch(&m, "1.1"), "");
    assert_eq!(fetch(&m, "1.HEADER"), "");
}

#[test]
fn rfc3501_6_4_5_top_level_message_rfc822() {
    let m = crlf(
        "Subject: forwarded
Content-Type: message/rfc822

Subject: inner
From: z@example.org

inner text
",
    );
    assert_eq!(
        fetch(&m, "1.HEADER"),
        "Subject: inner\r\nFrom: z@example.org\r\n\r\n"
    );
    assert_eq!(fetch(&m, "1.TEXT"), "inner text\r\n");
    assert_eq!(fetch(&m, "1.1"), "inner text\r\n");
    let bs = bs_wire(&m);
    assert!(bs.starts_with("* 1 FETCH (BODYSTRUCTURE (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 51 (NIL \"inner\""), "{bs}");
    assert!(bs.ends_with("(\"TEXT\" \"PLAIN\" (\"charset\" \"us-ascii\") NIL NIL \"7BIT\" 12 1 NIL NIL NIL NIL) 4 NIL NIL NIL NIL))\r\n"), "{bs}");
}

#[test]
fn rfc3501_6_4_5_partial() {
    let data = b"0123456789";
    assert_eq!(partial(data, 0, 4), b"0123");
    assert_eq!(partial(data, 8, 10), b"89");
    assert_eq!(partial(data, 10, 1), b"");
    assert_eq!(partial(data, 11, 1), b"");
    assert_eq!(partial(data, 3, 0), b"");
    assert_eq!(partial(data, u32::MAX, u32::MAX), b"");
    assert_eq!(partial(data, 2, u32::MAX), b"23456789");
}

#[test]
fn rfc3516_binary_section_decodes_transfer_encoding() {
    let m = crlf(MIXED);
    let nz =
        |v: &[u32]| -> Vec<NonZeroU32> { v.iter().filter_map(|&n| NonZeroU32::new(n)).collect() };
    assert_eq!(
        binary_section(&m, &nz(&[1, 1])).unwrap(),
        "Café au lait".as_bytes()
    );
    assert_eq!(
        binary_section(&m, &nz(&[2])).unwrap(),
        b"%PDF-1.4\n%\xc3\xa4\xc3\xbc\xc3\xb6\xc3\x9f\n"
    );
    assert_eq!(
        binary_section(&m, &nz(&[1, 2])).unwrap(),
        fetch(&m, "1.2").as_bytes()
    );
    assert_eq!(
        binary_section(&m, &nz(&[3])).unwrap(),
        fetch(&m, "3").as_bytes()
    );
    assert_eq!(binary_section(&m, &[]).unwrap(), m);
    assert_eq!(binary_section(&m, &nz(&[9])).unwrap(), b"");
    let odd = crlf("Content-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n");
    assert_eq!(
        binary_section(&odd, &nz(&[1])),
        Err(BinaryError::UnknownCte)
    );
}

#[test]
fn rfc5322_bare_lf_messages_are_understood() {
    let m = MIXED.as_bytes();
    assert_eq!(fetch(m, "1.1"), "Caf=C3=A9 au lait");
    assert_eq!(fetch(m, "3.TEXT"), "Inner body line 1\nInner body line 2");
    assert_eq!(
        fetch(m, "HEADER.FIELDS (To)"),
        "To: Bob <bob@example.net>\n\r\n"
    );
    assert_eq!(envelope(m), envelope(&crlf(MIXED)));
}

#[test]
fn rfc3501_base64_encoded_message_rfc822_is_described() {
    // "From: q@example.org\r\nSubject: b64\r\n\r\nhi\r\n" in base64.
    let m = crlf(
        "Content-Type: multipart/mixed; boundary=b

--b
Content-Type: message/rfc822
Content-Transfer-Encoding: base64

RnJvbTogcUBleGFtcGxlLm9yZw0KU3ViamVjdDogYjY0DQoNCmhpDQo=
--b--
",
    );
    let bs = bs_wire(&m);
    assert!(
        bs.contains("(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"base64\" 56 (NIL \"b64\""),
        "{bs}"
    );
    assert_eq!(
        fetch(&m, "1.HEADER"),
        "From: q@example.org\r\nSubject: b64\r\n\r\n"
    );
    assert_eq!(fetch(&m, "1.TEXT"), "hi\r\n");
}

#[test]
fn rfc3501_eight_bit_and_nul_in_headers_never_break_strings() {
    let mut m =
        b"Subject: caf\xe9 \xff\x00end\r\nFrom: J\xc3\xb6rg <j@example.org>\r\n\r\nbody \xff\r\n"
            .to_vec();
    let e = envelope(&m);
    assert_eq!(
        e.subject.clone().into_option().unwrap().as_ref(),
        b"caf\xe9 \xffend"
    );
    let w = env_wire(&m);
    // 8-bit data goes out as a literal.
    assert!(w.contains("{9}\r\ncaf"), "{w}");
    let _ = body_structure(&m, true);
    m.truncate(20);
    let _ = envelope(&m);
}

/// Tiny deterministic generator for the robustness tests.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs every public function on `m`, encoding the results like the
/// session would.
fn exercise(m: &[u8]) {
    let _ = env_wire(m);
    let _ = bs_wire(m);
    let _ = body_wire(m);
    for spec in [
        "",
        "HEADER",
        "TEXT",
        "1",
        "1.MIME",
        "1.1",
        "2.1.HEADER",
        "3.TEXT",
        "3.1",
        "1.2.3.4",
        "HEADER.FIELDS (From To)",
        "3.HEADER.FIELDS.NOT (From)",
    ] {
        let s = sec(spec);
        let data = section(m, s.as_ref());
        let _ = partial(&data, 3, 7);
    }
    for path in [&[1u32][..], &[1, 1], &[2], &[3, 1]] {
        let path: Vec<NonZeroU32> = path.iter().filter_map(|&n| NonZeroU32::new(n)).collect();
        let _ = binary_section(m, &path);
    }
    let _ = decode_for_search(m, true);
    // HEADER and TEXT split the message.
    let mut whole = section(m, sec("HEADER").as_ref());
    whole.extend(section(m, sec("TEXT").as_ref()));
    assert_eq!(whole, m);
    let p = ParsedMessage::new(m);
    assert_eq!(p.envelope(), envelope(m));
    assert_eq!(p.body_structure(true), body_structure(m, true));
}

#[test]
fn robustness_truncated_samples_at_every_byte() {
    for sample in [MIXED, DIGEST, RFC3501_SAMPLE] {
        let m = crlf(sample);
        for cut in 0..=m.len() {
            exercise(m.get(..cut).unwrap_or_default());
        }
    }
}

#[test]
fn robustness_random_and_mutated_input() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let base = crlf(MIXED);
    let alphabet = b"-\r\n:;<>\"()@,=?\\ \t.[]/abc\x00\xff";
    for round in 0..300 {
        let mut m = base.clone();
        for _ in 0..(1 + round % 20) {
            let at = (rng.next() as usize) % m.len().max(1);
            let b = alphabet[(rng.next() as usize) % alphabet.len()];
            match rng.next() % 3 {
                0 => m[at] = b,
                1 => m.insert(at, b),
                _ => {
                    m.remove(at);
                }
            }
        }
        exercise(&m);
        // Pure noise.
        let noise: Vec<u8> = (0..(rng.next() % 400))
            .map(|_| alphabet[(rng.next() as usize) % alphabet.len()])
            .collect();
        exercise(&noise);
    }
    exercise(b"");
    exercise(b"\r\n");
    exercise(b"no header at all");
}

#[test]
fn robustness_deep_nesting_is_bounded() {
    let depth = 300;
    let mut m = String::new();
    for i in 0..depth {
        m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
        ));
    }
    m.push_str("Content-Type: text/plain\n\ndeep\n");
    for i in (0..depth).rev() {
        m.push_str(&format!("--b{i}--\n"));
    }
    let m = crlf(&m);
    exercise(&m);
    let mut nested = String::new();
    for _ in 0..depth {
        nested.push_str("Content-Type: message/rfc822\n\n");
    }
    nested.push_str("Subject: core\n\nx\n");
    exercise(&crlf(&nested));
}

// ---------------------------------------------------------------------------
// Hostile nesting (issue 9): tens of thousands of levels must neither
// overflow the stack nor take unbounded time. Run on a thread with the
// stack of a tokio worker (2 MiB), where the session does this work.
// ---------------------------------------------------------------------------

/// Runs `f` on a thread with a tokio worker's stack size.
fn on_worker_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no panic");
}

/// `depth` message/rfc822 parts, each the whole body of the one above.
pub(crate) fn nested_rfc822(depth: usize) -> Vec<u8> {
    let mut m = String::from("From: a@example.com\nSubject: deep\n");
    for _ in 0..depth {
        m.push_str("Content-Type: message/rfc822\n\nSubject: inner\n");
    }
    m.push_str("\nx\n");
    crlf(&m)
}

/// `depth` multiparts, each with one part: the next multipart.
pub(crate) fn nested_multipart(depth: usize) -> Vec<u8> {
    let mut m = String::from("From: a@example.com\nSubject: deep\n");
    for i in 0..depth {
        m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
        ));
    }
    m.push_str("Content-Type: text/plain\n\ndeep\n");
    for i in (0..depth).rev() {
        m.push_str(&format!("--b{i}--\n"));
    }
    crlf(&m)
}

/// Multiparts alternating with message/rfc822 parts, `depth` levels.
pub(crate) fn nested_mixed(depth: usize) -> Vec<u8> {
    let mut m = String::from("From: a@example.com\nSubject: deep\n");
    for i in 0..depth {
        if i % 2 == 0 {
            m.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
            ));
        } else {
            m.push_str("Content-Type: message/rfc822\n\nSubject: inner\n");
        }
    }
    m.push_str("Content-Type: text/plain\n\ndeep\n");
    for i in (0..depth).rev().filter(|i| i % 2 == 0) {
        m.push_str(&format!("--b{i}--\n"));
    }
    crlf(&m)
}

/// A message/rfc822 part in base64 whose content is `inner` (mail-parser
/// decodes and parses such parts itself).
pub(crate) fn encoded_rfc822(inner: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
    let mut m = String::from(
        "From: a@example.com\nSubject: wrapped\nContent-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n",
    );
    for chunk in b64.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        m.push('\n');
    }
    m.push_str("--zz--\n");
    crlf(&m)
}

/// Everything FETCH, SEARCH and the summary cache do with a message,
/// including encoding the results as the session does.
fn exercise_all(m: &[u8]) {
    let _ = env_wire(m);
    let bs = bs_wire(m);
    assert!(bs.contains("BODYSTRUCTURE ("), "{bs}");
    let _ = body_wire(m);
    let deep: Vec<NonZeroU32> = std::iter::repeat_n(NonZeroU32::MIN, 50_000).collect();
    for len in [1, 2, 3, 40, 70, 1000, 50_000] {
        let path = deep.get(..len).unwrap_or_default();
        let _ = binary_section(m, path);
        let p = imap_types::fetch::Part(Vec1::try_from(path.to_vec()).expect("non-empty"));
        let _ = section(m, Some(&Section::Part(p.clone())));
        let _ = section(m, Some(&Section::Header(Some(p.clone()))));
        let _ = section(m, Some(&Section::Mime(p)));
    }
    let d = decode_for_search(m, true);
    assert!(!d.headers.is_empty());
    let s = crate::imap::summary::Summary::compute(m);
    assert!(s.bodystructure.starts_with(b"BODYSTRUCTURE ("));
}

#[test]
fn issue9_nested_rfc822_50000_levels_is_bounded() {
    on_worker_stack(|| exercise_all(&nested_rfc822(50_000)));
}

#[test]
fn issue9_nested_multipart_50000_levels_is_bounded() {
    on_worker_stack(|| exercise_all(&nested_multipart(50_000)));
}

#[test]
fn issue9_nested_mixed_and_encoded_levels_are_bounded() {
    on_worker_stack(|| {
        exercise_all(&nested_mixed(40_000));
        exercise_all(&encoded_rfc822(&nested_rfc822(20_000)));
        exercise_all(&encoded_rfc822(&encoded_rfc822(&encoded_rfc822(
            &nested_multipart(20_000),
        ))));
    });
}

#[test]
fn issue9_nesting_at_the_cap_is_described_and_deeper_is_opaque() {
    on_worker_stack(|| {
        // Exactly MAX_DEPTH levels: described (the innermost text is there).
        for m in [nested_mixed(MAX_DEPTH), nested_rfc822(MAX_DEPTH)] {
            let bs = bs_wire(&m);
            assert!(!bs.contains("OCTET-STREAM"), "{bs}");
            assert!(bs.contains("(\"TEXT\" "), "{bs}");
            exercise_all(&m);
        }
        // One more: the whole message is one opaque part.
        let m = nested_mixed(MAX_DEPTH + 1);
        let bs = bs_wire(&m);
        assert!(
            bs.starts_with("* 1 FETCH (BODYSTRUCTURE (\"APPLICATION\" \"OCTET-STREAM\""),
            "{bs}"
        );
        let body = section(&m, None).split_off(header_end(&m));
        let one = imap_types::fetch::Part(Vec1::from(NonZeroU32::MIN));
        assert_eq!(section(&m, Some(&Section::Part(one))), body);
        assert_eq!(binary_section(&m, &[NonZeroU32::MIN]), Ok(body));
        let two = imap_types::fetch::Part(Vec1::try_from(vec![NonZeroU32::MIN; 2]).unwrap());
        assert!(section(&m, Some(&Section::Part(two))).is_empty());
        assert!(decode_for_search(&m, true).body.contains("deep"));
        assert!(env_wire(&m).contains("\"deep\""));
    });
}

/// Headers built to make a parser recurse or go quadratic: comments nested
/// 50,000 deep in address and MIME fields, 50,000 groups, encoded-words,
/// Content-Type parameters and RFC 2231 continuations.
#[test]
fn issue9_hostile_headers_are_bounded() {
    on_worker_stack(|| {
        let n = 50_000;
        let deep_comment = format!("{}x{}", "(".repeat(n), ")".repeat(n));
        let unclosed = "(".repeat(n);
        let groups = "g:a@b;".repeat(n / 10);
        let words = "=?utf-8?q?a?= ".repeat(n / 5);
        let params: String = (0..n / 10).map(|i| format!("; p*{i}*=x")).collect();
        for h in [
            format!("From: {deep_comment} <a@b>\nTo: {unclosed}\n"),
            format!("To: {groups}\nCc: {}\n", "<".repeat(n)),
            format!("Subject: {words}\nFrom: {words} <a@b>\n"),
            format!("Content-Type: text/plain{params}\nContent-Disposition: attachment{params}\n"),
            format!("Content-Type: multipart/mixed; boundary=\"{deep_comment}\"\n"),
            format!("Content-Type: {deep_comment}multipart/mixed{deep_comment}; boundary=a\n"),
            format!("Content-Language: {}\n", "en, ".repeat(n)),
            format!(
                "References: {}\nIn-Reply-To: {}\n",
                "<a@b> ".repeat(n),
                "<".repeat(n)
            ),
        ] {
            let m = crlf(&format!("{h}\n--a\n\nbody\n--a--\n"));
            exercise_all(&m);
        }
    });
}

/// SEARCH BODY/TEXT (RFC 9051 6.4.4) reads a plain ASCII text/plain body
/// as stored; that must be exactly the text mail-parser decodes, for every
/// header and line-end shape such a message can have. Anything that would
/// decode differently takes the full path.
#[test]
fn rfc9051_6_4_4_plain_ascii_body_is_the_decoded_text() {
    let headers = [
        "",
        "Content-Type: text/plain\r\n",
        "Content-Type: TEXT/Plain; charset=us-ascii\r\n",
        "Content-Type: text/plain; charset=\"UTF-8\"\r\n",
        "Content-Type: text/plain;\r\n charset=iso-8859-1\r\n",
        "Content-Transfer-Encoding: 7bit\r\n",
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8BIT\r\n",
        "MIME-Version: 1.0\r\nContent-Transfer-Encoding:  binary \r\n",
    ];
    let bodies = [
        "",
        "x",
        "hello world\r\n",
        "one\r\ntwo\r\n\r\nthree",
        "trailing blank lines\r\n\r\n\r\n",
        "lf only\nlines\n",
        "\r\nstarts with a blank line\r\n",
        "=3D not decoded =?utf-8?q?x?= as is\r\n",
        "<b>not html</b> --boundary\r\n-- \r\nsig\r\n",
        "  leading spaces\ttabs\r\n.\r\n",
    ];
    for h in headers {
        for b in bodies {
            for sep in ["\r\n", "\n"] {
                let m = format!("From: a@b\r\nSubject: s\r\n{h}{sep}{b}");
                let m = m.as_bytes();
                let fields = fields(clamp(m, 0, header_end(m)));
                let fast = plain_ascii_body(m, &fields);
                assert_eq!(fast.as_deref(), Some(decoded_body(m).as_str()), "{m:?}");
            }
        }
    }
    let not_plain = [
        "Content-Type: text/html\r\n\r\n<p>x</p>\r\n",
        "Content-Type: text/plain; charset=utf-16\r\n\r\nx\r\n",
        "Content-Type: text/plain; format=flowed\r\n\r\nx \r\ny\r\n",
        "Content-Type: text/plain; charset*=us-ascii''x\r\n\r\nx\r\n",
        "Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n",
        "Content-Transfer-Encoding: quoted-printable\r\n\r\na=3Db\r\n",
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
        "Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\ny\r\n",
        "Content-Disposition: attachment\r\n\r\nx\r\n",
        "Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\nx\r\n",
        "Subject: caf\u{e9}\r\n\r\nx\r\n",
        "\r\nbody caf\u{e9}\r\n",
        "Bad Header Line\r\n\r\nx\r\n",
        "X: nul\0\r\n\r\nx\r\n",
    ];
    for m in not_plain {
        let m = format!("From: a@b\r\n{m}");
        let m = m.as_bytes();
        let fields = fields(clamp(m, 0, header_end(m)));
        assert_eq!(plain_ascii_body(m, &fields), None, "{m:?}");
    }
}
