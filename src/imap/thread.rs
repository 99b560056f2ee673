//! SORT and THREAD (RFC 5256): ordering and threading of messages from
//! their summaries. Pure functions; the session gathers the messages.
//!
//! Bounded whatever the messages say (issue 9): at most
//! `summary::MAX_REFERENCES` (64) ids are taken from one message's
//! References, the last ones; links that would close a loop are refused;
//! and every walk over the thread tree (rendering, pruning, sorting) is an
//! iterative loop that visits each node once, so a thread as deep as the
//! mailbox is long costs no stack.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::command::{SortKey, ThreadAlgo};
use super::summary::{Summary, MAX_REFERENCES};

/// One message as SORT and THREAD see it.
pub struct Item<'a> {
    /// Message sequence number (ties are broken by it).
    pub seq: u32,
    /// What the response names it by (sequence number or UID).
    pub out: u32,
    pub internal_date: i64,
    pub size: u64,
    pub summary: &'a Summary,
}

impl Item<'_> {
    /// The sent date, or INTERNALDATE when the Date: header is unusable
    /// (RFC 5256 2.2).
    fn sent(&self) -> i64 {
        self.summary.sent.unwrap_or(self.internal_date)
    }
}

fn compare(a: &Item<'_>, b: &Item<'_>, key: SortKey) -> Ordering {
    let (x, y) = (a.summary, b.summary);
    match key {
        SortKey::Arrival => a.internal_date.cmp(&b.internal_date),
        SortKey::Date => a.sent().cmp(&b.sent()),
        SortKey::Size => a.size.cmp(&b.size),
        SortKey::Subject => casemap(&x.subject, &y.subject),
        SortKey::From => casemap(&x.from, &y.from),
        SortKey::To => casemap(&x.to, &y.to),
        SortKey::Cc => casemap(&x.cc, &y.cc),
        SortKey::DisplayFrom => casemap(&x.display_from, &y.display_from),
        SortKey::DisplayTo => casemap(&x.display_to, &y.display_to),
    }
}

/// The i;ascii-casemap collation, SORT's default (RFC 5256 3, RFC 4790
/// 9.2): a-z become A-Z, then octets compare. Not the same as comparing
/// lowercased text: `_` (0x5F) sorts after `A` but before `a`.
fn casemap(a: &str, b: &str) -> Ordering {
    a.bytes()
        .map(|c| c.to_ascii_uppercase())
        .cmp(b.bytes().map(|c| c.to_ascii_uppercase()))
}

/// SORT (RFC 5256 3): the `out` numbers in order. Equal keys fall back to
/// the sequence number.
pub fn sort(items: &mut [Item<'_>], criteria: &[(bool, SortKey)]) -> Vec<u32> {
    items.sort_by(|a, b| {
        for &(rev, key) in criteria {
            let o = compare(a, b, key);
            let o = if rev { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.seq.cmp(&b.seq)
    });
    items.iter().map(|i| i.out).collect()
}

/// A node of a thread tree: a message (index into the items) or a dummy.
#[derive(Debug, Clone, Default)]
struct Node {
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

/// THREAD (RFC 5256 3, 4): the response's thread list, e.g.
/// `(2)(3 6 (4 23)(44 7 96))`.
pub fn thread(items: &[Item<'_>], algo: ThreadAlgo) -> String {
    let roots = match algo {
        ThreadAlgo::OrderedSubject => ordered_subject(items),
        ThreadAlgo::References => references(items),
    };
    let (nodes, roots) = roots;
    render(&nodes, items, &roots)
}

/// What is left to write while rendering a thread.
enum Step {
    Node(usize),
    Text(&'static str),
}

/// The thread list: each root in parentheses; each node written as its
/// number, then a lone child inline, or each of several children in
/// parentheses. Iterative (explicit stack).
fn render(nodes: &[Node], items: &[Item<'_>], roots: &[usize]) -> String {
    let mut out = String::new();
    let mut todo = Vec::new();
    for &r in roots.iter().rev() {
        todo.push(Step::Text(")"));
        todo.push(Step::Node(r));
        todo.push(Step::Text("("));
    }
    let mut seen = vec![false; nodes.len()];
    while let Some(step) = todo.pop() {
        let n = match step {
            Step::Text(t) => {
                out.push_str(t);
                continue;
            }
            Step::Node(n) => n,
        };
        let Some(node) = nodes.get(n) else {
            continue;
        };
        match seen.get_mut(n) {
            Some(s) if !*s => *s = true,
            _ => continue, // a corrupt tree with a loop: write each node once
        }
        if let Some(m) = node.msg.and_then(|m| items.get(m)) {
            out.push_str(&m.out.to_string());
        }
        match node.children.as_slice() {
            [] => {}
            [only] => {
                if node.msg.is_some() {
                    out.push(' ');
                }
                todo.push(Step::Node(*only));
            }
            many => {
                if node.msg.is_some() {
                    out.push(' ');
                }
                for c in many.iter().rev() {
                    todo.push(Step::Text(")"));
                    todo.push(Step::Node(*c));
                    todo.push(Step::Text("("));
                }
            }
        }
    }
    out
}

/// The nodes under `roots` (included), parents before children, each once.
fn preorder(nodes: &[Node], roots: &[usize]) -> Vec<usize> {
    let mut seen = vec![false; nodes.len()];
    let mut order = Vec::new();
    let mut stack: Vec<usize> = roots.iter().rev().copied().collect();
    while let Some(n) = stack.pop() {
        match seen.get_mut(n) {
            Some(s) if !*s => *s = true,
            _ => continue,
        }
        order.push(n);
        if let Some(node) = nodes.get(n) {
            stack.extend(node.children.iter().rev());
        }
    }
    order
}

/// The sent date of a node: its message's, or its first child's (a dummy's
/// date is that of its first child, RFC 5256 3 step 4).
fn node_date(nodes: &[Node], items: &[Item<'_>], n: usize) -> (i64, u32) {
    let mut cur = n;
    for _ in 0..=nodes.len() {
        let Some(node) = nodes.get(cur) else {
            break;
        };
        if let Some(m) = node.msg.and_then(|m| items.get(m)) {
            return (m.sent(), m.seq);
        }
        match node.children.first() {
            Some(&c) => cur = c,
            None => break,
        }
    }
    (0, 0)
}

fn sort_nodes(nodes: &[Node], items: &[Item<'_>], list: &mut [usize]) {
    list.sort_by_cached_key(|&n| node_date(nodes, items, n));
}

/// ORDEREDSUBJECT (RFC 5256 3): threads by base subject; the first message
/// (by sent date) is the parent of the others.
fn ordered_subject(items: &[Item<'_>]) -> (Vec<Node>, Vec<usize>) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&items[a], &items[b]);
        x.summary
            .subject
            .cmp(&y.summary.subject)
            .then(x.sent().cmp(&y.sent()))
            .then(x.seq.cmp(&y.seq))
    });
    let mut nodes: Vec<Node> = Vec::new();
    let mut roots = Vec::new();
    let mut current: Option<(usize, &str)> = None;
    for i in order {
        let subject = items[i].summary.subject.as_str();
        let n = nodes.len();
        nodes.push(Node {
            msg: Some(i),
            ..Node::default()
        });
        match current {
            Some((root, s)) if s == subject => {
                nodes[n].parent = Some(root);
                nodes[root].children.push(n);
            }
            _ => {
                roots.push(n);
                current = Some((n, subject));
            }
        }
    }
    sort_nodes(&nodes, items, &mut roots);
    (nodes, roots)
}

/// Is `a` an ancestor of (or the same as) `b`?
fn is_ancestor(nodes: &[Node], a: usize, b: usize) -> bool {
    // A node without children is nobody's ancestor: no walk needed (the
    // usual case, which keeps a long reply chain from costing its square).
    if a != b && nodes.get(a).is_some_and(|n| n.children.is_empty()) {
        return false;
    }
    let mut cur = Some(b);
    let mut steps = 0;
    while let Some(c) = cur {
        if c == a {
            return true;
        }
        steps += 1;
        if steps > nodes.len() {
            return true; // a loop: refuse the link
        }
        cur = nodes.get(c).and_then(|n| n.parent);
    }
    false
}

fn unlink(nodes: &mut [Node], c: usize) {
    if let Some(p) = nodes.get(c).and_then(|n| n.parent) {
        if let Some(pn) = nodes.get_mut(p) {
            pn.children.retain(|&x| x != c);
        }
    }
    if let Some(n) = nodes.get_mut(c) {
        n.parent = None;
    }
}

fn link(nodes: &mut [Node], parent: usize, child: usize) {
    unlink(nodes, child);
    if let Some(n) = nodes.get_mut(child) {
        n.parent = Some(parent);
    }
    if let Some(p) = nodes.get_mut(parent) {
        p.children.push(child);
    }
}

/// A root replaced in the list being built (step 5), left out at the end.
const GONE: usize = usize::MAX;

/// REFERENCES (RFC 5256 3): the JWZ algorithm.
fn references<'a>(items: &[Item<'a>]) -> (Vec<Node>, Vec<usize>) {
    let mut nodes: Vec<Node> = Vec::new();
    // Ids borrow from the summaries: a lookup allocates nothing, and an
    // id is copied only for a message without a usable Message-ID.
    let mut by_id: HashMap<std::borrow::Cow<'a, str>, usize> = HashMap::new();
    let mut get = |nodes: &mut Vec<Node>, id: std::borrow::Cow<'a, str>| -> usize {
        if let Some(&n) = by_id.get(id.as_ref()) {
            return n;
        }
        nodes.push(Node::default());
        by_id.insert(id, nodes.len() - 1);
        nodes.len() - 1
    };
    // (1) containers and links.
    for (i, item) in items.iter().enumerate() {
        let s = item.summary;
        let id = s.message_id.as_str();
        let mut c = if id.is_empty() {
            None
        } else {
            Some(get(&mut nodes, id.into()))
        };
        if c.is_some_and(|c| nodes[c].msg.is_some()) {
            c = None; // a duplicate Message-ID: a container of its own
        }
        let c = match c {
            Some(c) => c,
            None => get(&mut nodes, format!("\0{i}").into()),
        };
        nodes[c].msg = Some(i);
        let mut prev: Option<usize> = None;
        let skip = s.references.len().saturating_sub(MAX_REFERENCES);
        for r in s.references.iter().skip(skip) {
            let rc = get(&mut nodes, r.as_str().into());
            if let Some(p) = prev {
                if nodes[rc].parent.is_none() && !is_ancestor(&nodes, rc, p) {
                    link(&mut nodes, p, rc);
                }
            }
            prev = Some(rc);
        }
        match prev {
            Some(p) if !is_ancestor(&nodes, c, p) => link(&mut nodes, p, c),
            _ => unlink(&mut nodes, c),
        }
    }
    // (2) the root set.
    let mut roots: Vec<usize> = (0..nodes.len())
        .filter(|&n| nodes[n].parent.is_none())
        .collect();
    // (3) prune dummies.
    roots = prune(&mut nodes, roots);
    // (4) sort the root set (children first, for dummies' dates).
    sort_tree(&mut nodes, items, &roots);
    sort_nodes(&nodes, items, &mut roots);
    // (5) merge by subject.
    let subject_of = |nodes: &[Node], n: usize| -> Option<(String, bool)> {
        let node = nodes.get(n)?;
        let m = node
            .msg
            .or_else(|| node.children.first().and_then(|&c| nodes.get(c)?.msg))?;
        let s = items.get(m)?.summary;
        Some((s.subject.clone(), s.is_reply))
    };
    let mut table: HashMap<String, usize> = HashMap::new();
    for &r in &roots {
        let Some((subj, reply)) = subject_of(&nodes, r) else {
            continue;
        };
        if subj.is_empty() {
            continue;
        }
        match table.get(&subj).copied() {
            None => {
                table.insert(subj, r);
            }
            Some(old) => {
                let old_dummy = nodes[old].msg.is_none();
                let new_dummy = nodes[r].msg.is_none();
                let old_reply = subject_of(&nodes, old).is_some_and(|x| x.1);
                if (old_dummy && !new_dummy) || (old_reply && !reply) {
                    table.insert(subj, r);
                }
            }
        }
    }
    // `kept` is the new root list; `at` finds a node's place in it, so a
    // replacement costs a lookup rather than a scan of the list (the scan
    // made a mailbox with thousands of same-subject threads quadratic).
    let mut kept: Vec<usize> = Vec::new();
    let mut at: HashMap<usize, usize> = HashMap::new();
    let mut gone = std::collections::HashSet::new();
    let keep = |kept: &mut Vec<usize>, at: &mut HashMap<usize, usize>, n: usize| {
        at.insert(n, kept.len());
        kept.push(n);
    };
    for &r in &roots {
        if gone.contains(&r) {
            continue;
        }
        let Some((subj, reply)) = subject_of(&nodes, r) else {
            keep(&mut kept, &mut at, r);
            continue;
        };
        let Some(&t) = table.get(&subj) else {
            keep(&mut kept, &mut at, r);
            continue;
        };
        if subj.is_empty() || t == r {
            keep(&mut kept, &mut at, r);
            continue;
        }
        let t_dummy = nodes[t].msg.is_none();
        let r_dummy = nodes[r].msg.is_none();
        let t_reply = subject_of(&nodes, t).is_some_and(|x| x.1);
        if t_dummy && r_dummy {
            let kids = std::mem::take(&mut nodes[r].children);
            for k in kids {
                nodes[k].parent = None;
                link(&mut nodes, t, k);
            }
        } else if t_dummy {
            link(&mut nodes, t, r);
        } else if r_dummy {
            // The message becomes a child of the dummy, which takes its
            // place in the table.
            link(&mut nodes, r, t);
            table.insert(subj, r);
            gone.insert(t);
            if let Some(p) = at.remove(&t) {
                kept[p] = GONE;
            }
            keep(&mut kept, &mut at, r);
            continue;
        } else if !t_reply && reply {
            link(&mut nodes, t, r);
        } else {
            let d = nodes.len();
            nodes.push(Node::default());
            link(&mut nodes, d, t);
            link(&mut nodes, d, r);
            table.insert(subj, d);
            if let Some(p) = at.remove(&t) {
                kept[p] = d;
                at.insert(d, p);
            } else {
                // `t` comes later in the root list: it is replaced there.
                gone.insert(t);
                keep(&mut kept, &mut at, d);
            }
            continue;
        }
    }
    let mut roots: Vec<usize> = kept
        .into_iter()
        .filter(|&r| r != GONE && nodes[r].parent.is_none())
        .collect();
    // (6) sort every level.
    sort_tree(&mut nodes, items, &roots);
    sort_nodes(&nodes, items, &mut roots);
    (nodes, roots)
}

/// Removes empty dummies and promotes the children of dummies (RFC 5256
/// 3, step 3). Returns the new root list. Children are pruned before their
/// parents (reverse preorder), without recursion.
fn prune(nodes: &mut [Node], roots: Vec<usize>) -> Vec<usize> {
    let order = preorder(nodes, &roots);
    let mut is_root = vec![false; nodes.len()];
    for &r in &roots {
        if let Some(x) = is_root.get_mut(r) {
            *x = true;
        }
    }
    // What each non-root node is replaced by in its parent's child list.
    let mut replacement: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for &n in order.iter().rev() {
        let kids = std::mem::take(&mut nodes[n].children);
        let kids: Vec<usize> = kids
            .into_iter()
            .flat_map(|k| std::mem::take(&mut replacement[k]))
            .collect();
        for &k in &kids {
            nodes[k].parent = Some(n);
        }
        nodes[n].children = kids;
        if is_root[n] {
            continue;
        }
        replacement[n] = if nodes[n].msg.is_some() {
            vec![n]
        } else {
            // A dummy below the root level: its children take its place.
            let kids = std::mem::take(&mut nodes[n].children);
            for &k in &kids {
                nodes[k].parent = nodes[n].parent;
            }
            kids
        };
    }
    let mut out = Vec::new();
    for n in roots {
        if nodes[n].msg.is_some() {
            out.push(n);
            continue;
        }
        match nodes[n].children.len() {
            0 => {}
            1 => {
                let k = nodes[n].children[0];
                nodes[k].parent = None;
                nodes[n].children.clear();
                out.push(k);
            }
            _ => out.push(n),
        }
    }
    out
}

/// Sorts the children of every node under `list` by date, children's
/// children first (a dummy's date is its first child's).
fn sort_tree(nodes: &mut [Node], items: &[Item<'_>], list: &[usize]) {
    for &n in preorder(nodes, list).iter().rev() {
        let mut kids = std::mem::take(&mut nodes[n].children);
        sort_nodes(nodes, items, &mut kids);
        nodes[n].children = kids;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(subject: &str, id: &str, refs: &[&str], sent: i64) -> Summary {
        let (s, reply) = super::super::summary::base_subject(subject);
        Summary {
            subject: s,
            is_reply: reply,
            message_id: id.into(),
            references: refs.iter().map(|r| r.to_string()).collect(),
            sent: Some(sent),
            from: format!("{}", (b'z' - (sent % 26) as u8) as char),
            ..Summary::default()
        }
    }

    fn items(s: &[Summary]) -> Vec<Item<'_>> {
        s.iter()
            .enumerate()
            .map(|(i, s)| Item {
                seq: i as u32 + 1,
                out: i as u32 + 1,
                internal_date: 1000 - i as i64,
                size: (i as u64 * 7) % 5,
                summary: s,
            })
            .collect()
    }

    #[test]
    fn rfc5256_3_sort_with_reverse_and_ties_by_sequence() {
        let s = vec![
            summary("b", "1", &[], 30),
            summary("a", "2", &[], 10),
            summary("Re: a", "3", &[], 20),
        ];
        assert_eq!(
            sort(&mut items(&s), &[(false, SortKey::Subject)]),
            vec![2, 3, 1]
        );
        assert_eq!(
            sort(&mut items(&s), &[(false, SortKey::Date)]),
            vec![2, 3, 1]
        );
        assert_eq!(
            sort(&mut items(&s), &[(true, SortKey::Arrival)]),
            vec![1, 2, 3]
        );
        assert_eq!(
            sort(
                &mut items(&s),
                &[(false, SortKey::Subject), (true, SortKey::Date)]
            ),
            vec![3, 2, 1]
        );
    }

    #[test]
    fn rfc5256_2_1_sort_subject_uses_base_subject_then_arrival_order() {
        let subjects = [
            "Re: [list] Fwd: Zebra (fwd)",
            "[fwd: Re: apple]",
            "Fw: Re:  mango",
            "RE [2]:\tapple",
            "Apple",
            "[blob] Re: [x] Mango (FWD) (fwd)",
            "\u{e9}clair",
            "zebra",
            "Banana\u{a0}split",
        ];
        let s: Vec<Summary> = subjects
            .iter()
            .enumerate()
            .map(|(i, sub)| summary(sub, &i.to_string(), &[], 100 - i as i64))
            .collect();
        // Equal base subjects keep the mailbox (arrival) order.
        assert_eq!(
            sort(&mut items(&s), &[(false, SortKey::Subject)]),
            vec![2, 4, 5, 9, 3, 6, 1, 8, 7]
        );
        assert_eq!(
            sort(&mut items(&s), &[(true, SortKey::Subject)]),
            vec![7, 1, 8, 3, 6, 9, 2, 4, 5]
        );
        assert_eq!(s.first().map(|x| x.subject.as_str()), Some("zebra"));
        // i;ascii-casemap: "_" (0x5F) after "A" (0x41), "[" after "Z".
        let t: Vec<Summary> = ["_under", "Apple", "zoo", "Re: [x] [y]"]
            .iter()
            .enumerate()
            .map(|(i, sub)| summary(sub, &i.to_string(), &[], 1))
            .collect();
        assert_eq!(
            sort(&mut items(&t), &[(false, SortKey::Subject)]),
            vec![2, 3, 4, 1]
        );
        assert_eq!(
            s.get(8).map(|x| x.subject.as_str()),
            Some("banana\u{a0}split")
        );
    }

    #[test]
    fn rfc5256_4_orderedsubject() {
        let s = vec![
            summary("x", "1", &[], 10),
            summary("Re: x", "2", &[], 20),
            summary("y", "3", &[], 5),
            summary("Re: x", "4", &[], 30),
            summary("z", "5", &[], 40),
            summary("Fwd: z", "6", &[], 50),
        ];
        assert_eq!(
            thread(&items(&s), ThreadAlgo::OrderedSubject),
            "(3)(1 (2)(4))(5 6)"
        );
    }

    #[test]
    fn rfc5256_3_references() {
        let s = vec![
            summary("a", "a@x", &[], 10),
            summary("Re: a", "b@x", &["a@x"], 20),
            summary("Re: a", "c@x", &["a@x", "b@x"], 30),
            summary("Re: a", "d@x", &["a@x"], 25),
            summary("other", "e@x", &[], 5),
            // Its parent is missing: the dummy is pruned, it is a root.
            summary("Re: lost", "f@x", &["gone@x"], 40),
        ];
        assert_eq!(
            thread(&items(&s), ThreadAlgo::References),
            "(5)(1 (2 3)(4))(6)"
        );
    }

    #[test]
    fn rfc5256_3_references_merges_same_subject_and_survives_loops() {
        let s = vec![
            summary("topic", "a@x", &[], 10),
            summary("Re: topic", "b@x", &[], 20),
            // A reference loop: a message naming itself and a cycle.
            summary("loop", "l@x", &["m@x", "l@x"], 30),
            summary("loop", "m@x", &["l@x"], 40),
            // Duplicate Message-ID.
            summary("dup", "a@x", &[], 50),
        ];
        let t = thread(&items(&s), ThreadAlgo::References);
        assert!(t.starts_with("(1 2)"), "{t}");
        assert!(t.contains('3') && t.contains('4') && t.contains('5'), "{t}");
    }

    /// Runs `f` on a thread with a tokio worker's stack size.
    fn on_worker_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(f)
            .expect("spawn")
            .join()
            .expect("no panic");
    }

    #[test]
    fn rfc5256_3_references_with_50000_ids_and_loops_is_bounded() {
        on_worker_stack(|| {
            let ids: Vec<String> = (0..50_000).map(|i| format!("r{i}@x")).collect();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            // One message naming 50,000 ancestors (summaries cached before
            // the cap), one naming itself in a loop, one a long cycle.
            let mut looped: Vec<&str> = refs.iter().take(1000).copied().collect();
            looped.extend(refs.iter().take(1000).copied());
            let s = vec![
                summary("a", "me@x", &refs, 10),
                summary("b", "loop@x", &["loop@x", "r49999@x", "loop@x"], 20),
                summary("c", "cyc@x", &looped, 30),
            ];
            let t = thread(&items(&s), ThreadAlgo::References);
            assert!(t.contains('1') && t.contains('2') && t.contains('3'), "{t}");
            let t = thread(&items(&s), ThreadAlgo::OrderedSubject);
            assert_eq!(t, "(1)(2)(3)");
        });
    }

    #[test]
    fn rfc5256_3_a_thread_30000_messages_deep_renders_without_recursion() {
        on_worker_stack(|| {
            let n = 30_000;
            let s: Vec<Summary> = (0..n)
                .map(|i| {
                    let parent = format!("m{}@x", i.max(1) - 1);
                    let refs: Vec<&str> = if i == 0 { vec![] } else { vec![&parent] };
                    summary("Re: deep", &format!("m{i}@x"), &refs, i as i64)
                })
                .collect();
            let t = thread(&items(&s), ThreadAlgo::References);
            let expected: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
            assert_eq!(t, format!("({})", expected.join(" ")));
            // The same chain with every message's parent missing: dummies
            // all the way down.
            let s: Vec<Summary> = (0..n)
                .map(|i| {
                    let r = [format!("gone{i}@x"), format!("m{i}@x")];
                    let refs: Vec<&str> = r.iter().map(String::as_str).collect();
                    summary("x", &format!("z{i}@x"), &refs, i as i64)
                })
                .collect();
            let t = thread(&items(&s), ThreadAlgo::References);
            assert!(t.starts_with('(') && t.ends_with(')'), "{}", &t[..50]);
        });
    }

    /// Step 5 with thousands of subjects each shared by two unrelated
    /// messages: every pair gets a dummy parent that takes the first
    /// one's place in the root list, found without scanning the list.
    #[test]
    fn rfc5256_3_references_merges_thousands_of_same_subject_pairs() {
        let n = 10_000;
        let s: Vec<Summary> = (0..2 * n)
            .map(|i| {
                summary(
                    &format!("topic {}", i % n),
                    &format!("m{i}@x"),
                    &[],
                    i as i64,
                )
            })
            .collect();
        let t = thread(&items(&s), ThreadAlgo::References);
        let expected: String = (1..=n).map(|i| format!("(({i})({}))", i + n)).collect();
        assert_eq!(t, expected);
        // A dummy (a missing parent) meeting a message of the same
        // subject later in the root list: the message goes under it.
        let s = vec![
            summary("Re: t", "a@x", &["gone@x"], 10),
            summary("Re: t", "b@x", &["gone@x"], 15),
            summary("t", "c@x", &[], 20),
        ];
        assert_eq!(thread(&items(&s), ThreadAlgo::References), "((1)(2)(3))");
    }
}
