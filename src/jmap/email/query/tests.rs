use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::jmap::email::index::Loc;
use crate::store::{Flags, MessageMeta};

fn mb(s: &str) -> Option<MailboxId> {
    s.strip_prefix("mb").and_then(|n| n.parse().ok())
}

fn entry(id: u64, thread: u64, mailbox: MailboxId, flags: &[&str], date: i64, size: u64) -> Entry {
    Entry {
        id,
        thread,
        locs: vec![Loc {
            mailbox,
            meta: MessageMeta {
                uid: id as u32,
                flags: Flags::from_names(flags),
                internal_date: date,
                tz_offset_min: 0,
                size,
                modseq: 1,
                offset: 0,
                save_date: date,
            },
        }],
    }
}

fn index() -> Index {
    let mut emails = BTreeMap::new();
    for e in [
        entry(1, 10, 1, &["\\Seen"], 1000, 100),
        entry(2, 10, 1, &[], 2000, 200),
        entry(3, 30, 2, &["\\Seen", "\\Flagged"], 3000, 300),
    ] {
        emails.insert(e.id, e);
    }
    Index {
        mailboxes: Vec::new(),
        emails,
    }
}

fn hits(filter: Value) -> Vec<u64> {
    let idx = index();
    let threads = idx.threads();
    let ctx = EvalCtx {
        index: &idx,
        threads: &threads,
        now: 0,
    };
    let f = parse_filter(&filter, &mb).unwrap();
    idx.emails
        .values()
        .filter(|e| matches(&f, e, &ctx, None))
        .map(|e| e.id)
        .collect()
}

#[test]
fn rfc8621_4_4_1_filter_conditions() {
    assert_eq!(hits(json!({"inMailbox": "mb1"})), vec![1, 2]);
    assert_eq!(hits(json!({"inMailbox": "nope"})), Vec::<u64>::new());
    assert_eq!(hits(json!({"inMailboxOtherThan": ["mb1"]})), vec![3]);
    assert_eq!(hits(json!({"hasKeyword": "$seen"})), vec![1, 3]);
    assert_eq!(hits(json!({"notKeyword": "$seen"})), vec![2]);
    assert_eq!(hits(json!({"minSize": 200})), vec![2, 3]);
    assert_eq!(hits(json!({"maxSize": 200})), vec![1]);
    assert_eq!(hits(json!({"after": "1970-01-01T00:33:20Z"})), vec![2, 3]);
    assert_eq!(hits(json!({"before": "1970-01-01T00:33:20Z"})), vec![1]);
    assert_eq!(hits(json!({"allInThreadHaveKeyword": "$seen"})), vec![3]);
    assert_eq!(
        hits(json!({"someInThreadHaveKeyword": "$seen"})),
        vec![1, 2, 3]
    );
    assert_eq!(
        hits(json!({"noneInThreadHaveKeyword": "$flagged"})),
        vec![1, 2]
    );
    // Several properties in one condition: all must hold.
    assert_eq!(
        hits(json!({"inMailbox": "mb1", "hasKeyword": "$seen"})),
        vec![1]
    );
}

#[test]
fn rfc8620_5_5_filter_operators() {
    let or = json!({"operator": "OR", "conditions": [{"inMailbox": "mb2"}, {"maxSize": 150}]});
    assert_eq!(hits(or), vec![1, 3]);
    let not = json!({"operator": "NOT", "conditions": [{"inMailbox": "mb2"}, {"maxSize": 150}]});
    assert_eq!(hits(not), vec![2]);
    let and = json!({"operator": "AND", "conditions": [{"inMailbox": "mb1"}, {"minSize": 150}]});
    assert_eq!(hits(and), vec![2]);
}

#[test]
fn unknown_or_oversized_filters_are_refused() {
    assert!(matches!(
        parse_filter(&json!({"nope": 1}), &mb),
        Err(QueryError::UnsupportedFilter(_))
    ));
    assert!(matches!(
        parse_filter(&json!({"operator": "XOR", "conditions": []}), &mb),
        Err(QueryError::UnsupportedFilter(_))
    ));
    assert!(matches!(
        parse_filter(&json!({"minSize": "x"}), &mb),
        Err(QueryError::InvalidArguments(_))
    ));
    let mut deep = json!({"minSize": 1});
    // serde_json refuses input nested deeper than 128: as deep as a
    // request can be.
    for _ in 0..120 {
        deep = json!({"operator": "NOT", "conditions": [deep]});
    }
    assert!(matches!(
        parse_filter(&deep, &mb),
        Err(QueryError::UnsupportedFilter(_))
    ));
}

#[test]
fn text_conditions_use_imap_search() {
    let idx = index();
    let threads = HashMap::new();
    let ctx = EvalCtx {
        index: &idx,
        threads: &threads,
        now: 0,
    };
    let msg = Arc::new(
        b"From: Alice <alice@example.com>\r\nSubject: Quarterly report\r\n\r\nThe numbers are in.\r\n"
            .to_vec(),
    );
    let e = &idx.emails[&1];
    let t = |f: Value| matches(&parse_filter(&f, &mb).unwrap(), e, &ctx, Some(&msg));
    assert!(t(json!({"from": "alice"})));
    assert!(!t(json!({"to": "alice"})));
    assert!(t(json!({"subject": "quarterly"})));
    assert!(t(json!({"body": "numbers"})));
    assert!(!t(json!({"body": "quarterly"})));
    assert!(t(json!({"text": "NUMBERS"})));
    assert!(t(json!({"header": ["Subject"]})));
    assert!(t(json!({"header": ["Subject", "report"]})));
    assert!(!t(json!({"header": ["X-None"]})));
    assert!(!t(json!({"hasAttachment": true})));
    assert!(t(json!({"hasAttachment": false})));
}

#[test]
fn rfc8621_4_4_2_sort_parsing() {
    let s = parse_sort(&json!([{"property": "size", "isAscending": false}, {"property": "hasKeyword", "keyword": "$Seen"}])).unwrap();
    assert_eq!(
        s[0],
        Comparator {
            property: SortBy::Size,
            ascending: false
        }
    );
    assert_eq!(s[1].property, SortBy::HasKeyword("$seen".into()));
    assert!(matches!(
        parse_sort(&json!([{"property": "nope"}])),
        Err(QueryError::UnsupportedSort(_))
    ));
    assert!(matches!(
        parse_sort(&json!([{"property": "hasKeyword"}])),
        Err(QueryError::InvalidArguments(_))
    ));
}

#[test]
fn rfc8620_5_5_position_anchor_limit() {
    let ids = [5, 6, 7, 8];
    assert_eq!(window(&ids, 0, None, 0, Some(2)), Ok((0, 2)));
    assert_eq!(window(&ids, -1, None, 0, None), Ok((3, 4)));
    assert_eq!(window(&ids, -10, None, 0, None), Ok((0, 4)));
    assert_eq!(window(&ids, 10, None, 0, None), Ok((4, 4)));
    assert_eq!(window(&ids, 0, Some(7), -1, Some(2)), Ok((1, 3)));
    assert_eq!(window(&ids, 0, Some(5), -3, None), Ok((0, 4)));
    assert_eq!(window(&ids, 0, Some(9), 0, None), Err(()));
}

#[test]
fn collapse_threads_keeps_first_of_each() {
    let idx = index();
    let all: Vec<&Entry> = idx.emails.values().rev().collect();
    let c: Vec<u64> = collapse_threads(&idx, all).iter().map(|e| e.id).collect();
    assert_eq!(c, vec![3, 2]);
}
