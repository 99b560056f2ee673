//! SORT and THREAD (RFC 5256): ordering and threading of messages from
//! their summaries. Pure functions; the session gathers the messages.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::command::{SortKey, ThreadAlgo};
use super::summary::Summary;

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
        SortKey::Subject => x.subject.cmp(&y.subject),
        SortKey::From => x.from.cmp(&y.from),
        SortKey::To => x.to.cmp(&y.to),
        SortKey::Cc => x.cc.cmp(&y.cc),
        SortKey::DisplayFrom => x.display_from.cmp(&y.display_from),
        SortKey::DisplayTo => x.display_to.cmp(&y.display_to),
    }
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
    let mut out = String::new();
    for r in roots {
        out.push('(');
        render(&nodes, items, r, &mut out);
        out.push(')');
    }
    out
}

fn render(nodes: &[Node], items: &[Item<'_>], n: usize, out: &mut String) {
    let Some(node) = nodes.get(n) else {
        return;
    };
    if let Some(m) = node.msg.and_then(|m| items.get(m)) {
        out.push_str(&m.out.to_string());
    }
    match node.children.as_slice() {
        [] => {}
        [only] => {
            if node.msg.is_some() {
                out.push(' ');
            }
            render(nodes, items, *only, out);
        }
        many => {
            if node.msg.is_some() {
                out.push(' ');
            }
            for c in many {
                out.push('(');
                render(nodes, items, *c, out);
                out.push(')');
            }
        }
    }
}

/// The sent date of a node: its message's, or its first child's.
fn node_date(nodes: &[Node], items: &[Item<'_>], n: usize, depth: usize) -> (i64, u32) {
    let Some(node) = nodes.get(n) else {
        return (0, 0);
    };
    if let Some(m) = node.msg.and_then(|m| items.get(m)) {
        return (m.sent(), m.seq);
    }
    match node.children.first() {
        Some(&c) if depth < 1000 => node_date(nodes, items, c, depth + 1),
        _ => (0, 0),
    }
}

fn sort_nodes(nodes: &[Node], items: &[Item<'_>], list: &mut [usize]) {
    list.sort_by_key(|&n| node_date(nodes, items, n, 0));
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

/// REFERENCES (RFC 5256 3): the JWZ algorithm.
fn references(items: &[Item<'_>]) -> (Vec<Node>, Vec<usize>) {
    let mut nodes: Vec<Node> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut get = |nodes: &mut Vec<Node>, id: &str| -> usize {
        *by_id.entry(id.to_string()).or_insert_with(|| {
            nodes.push(Node::default());
            nodes.len() - 1
        })
    };
    // (1) containers and links.
    for (i, item) in items.iter().enumerate() {
        let s = item.summary;
        let mut id = s.message_id.clone();
        let mut c = if id.is_empty() {
            None
        } else {
            Some(get(&mut nodes, &id))
        };
        if c.is_some_and(|c| nodes[c].msg.is_some()) {
            c = None; // a duplicate Message-ID: a container of its own
        }
        let c = match c {
            Some(c) => c,
            None => {
                id = format!("\0{i}");
                get(&mut nodes, &id)
            }
        };
        nodes[c].msg = Some(i);
        let mut prev: Option<usize> = None;
        for r in &s.references {
            let rc = get(&mut nodes, r);
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
    roots = prune(&mut nodes, roots, true, 0);
    // (4) sort the root set (children first, for dummies' dates).
    sort_tree(&mut nodes, items, &roots, 0);
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
    let mut kept = Vec::new();
    let mut gone = std::collections::HashSet::new();
    for &r in &roots {
        if gone.contains(&r) {
            continue;
        }
        let Some((subj, reply)) = subject_of(&nodes, r) else {
            kept.push(r);
            continue;
        };
        let Some(&t) = table.get(&subj) else {
            kept.push(r);
            continue;
        };
        if subj.is_empty() || t == r {
            kept.push(r);
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
            kept.retain(|&x| x != t);
            kept.push(r);
            continue;
        } else if !t_reply && reply {
            link(&mut nodes, t, r);
        } else {
            let d = nodes.len();
            nodes.push(Node::default());
            link(&mut nodes, d, t);
            link(&mut nodes, d, r);
            table.insert(subj, d);
            if let Some(pos) = kept.iter().position(|&x| x == t) {
                kept[pos] = d;
            } else {
                // `t` comes later in the root list: it is replaced there.
                gone.insert(t);
                kept.push(d);
            }
            continue;
        }
    }
    let mut roots: Vec<usize> = kept
        .into_iter()
        .filter(|&r| nodes[r].parent.is_none())
        .collect();
    // (6) sort every level.
    sort_tree(&mut nodes, items, &roots, 0);
    sort_nodes(&nodes, items, &mut roots);
    (nodes, roots)
}

/// Removes empty dummies and promotes the children of dummies (RFC 5256
/// 3, step 3). Returns the new list of `list`'s replacement.
fn prune(nodes: &mut Vec<Node>, list: Vec<usize>, at_root: bool, depth: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for n in list {
        let kids = std::mem::take(&mut nodes[n].children);
        let kids = if depth < 1000 {
            prune(nodes, kids, false, depth + 1)
        } else {
            kids
        };
        for &k in &kids {
            nodes[k].parent = Some(n);
        }
        nodes[n].children = kids;
        if nodes[n].msg.is_some() {
            out.push(n);
            continue;
        }
        match nodes[n].children.len() {
            0 => {}
            1 if at_root => {
                let k = nodes[n].children[0];
                nodes[k].parent = None;
                nodes[n].children.clear();
                out.push(k);
            }
            _ if at_root => out.push(n),
            _ => {
                // Promote the children to this level.
                let kids = std::mem::take(&mut nodes[n].children);
                for k in kids {
                    nodes[k].parent = nodes[n].parent;
                    out.push(k);
                }
            }
        }
    }
    out
}

fn sort_tree(nodes: &mut Vec<Node>, items: &[Item<'_>], list: &[usize], depth: usize) {
    if depth > 1000 {
        return;
    }
    for &n in list {
        let mut kids = std::mem::take(&mut nodes[n].children);
        sort_tree(nodes, items, &kids, depth + 1);
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
}
