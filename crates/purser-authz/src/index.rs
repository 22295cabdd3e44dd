//! A byte trie of the literal prefixes of the rules' `name` patterns.
//!
//! Every value a pattern matches starts with the pattern's literal prefix (the bytes before its
//! first wildcard or placeholder; nothing for a regex or a rule without `name`). Walking the
//! requested name down the trie therefore visits exactly the rules that might match it; all the
//! others cannot. The caller sorts the candidates by rule position to keep first-match-wins.

#[derive(Debug, Default)]
struct Node {
    /// Sorted by byte.
    edges: Vec<(u8, u32)>,
    /// Rules whose prefix ends here, in insertion (= file) order.
    rules: Vec<u32>,
}

#[derive(Debug)]
pub(crate) struct NameIndex {
    nodes: Vec<Node>,
}

impl NameIndex {
    pub(crate) fn new() -> Self {
        NameIndex {
            nodes: vec![Node::default()],
        }
    }

    pub(crate) fn insert(&mut self, prefix: &[u8], rule: u32) {
        let mut at = 0usize;
        for &b in prefix {
            at = match self.nodes[at].edges.binary_search_by_key(&b, |e| e.0) {
                Ok(k) => self.nodes[at].edges[k].1 as usize,
                Err(k) => {
                    let id = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[at].edges.insert(k, (b, id as u32));
                    id
                }
            };
        }
        self.nodes[at].rules.push(rule);
    }

    /// Appends every rule whose prefix is a prefix of `name` (unsorted across nodes).
    pub(crate) fn candidates(&self, name: &[u8], out: &mut Vec<u32>) {
        let mut at = 0usize;
        out.extend_from_slice(&self.nodes[0].rules);
        for &b in name {
            match self.nodes[at].edges.binary_search_by_key(&b, |e| e.0) {
                Ok(k) => at = self.nodes[at].edges[k].1 as usize,
                Err(_) => return,
            }
            out.extend_from_slice(&self.nodes[at].rules);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rules_whose_prefix_leads_the_name() {
        let mut idx = NameIndex::new();
        idx.insert(b"", 0);
        idx.insert(b"team/", 1);
        idx.insert(b"team/app", 2);
        idx.insert(b"other/", 3);
        idx.insert(b"team/", 4);
        let mut out = Vec::new();
        idx.candidates(b"team/app/x", &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![0, 1, 2, 4]);
        out.clear();
        idx.candidates(b"team", &mut out);
        assert_eq!(out, vec![0]);
        out.clear();
        idx.candidates(b"other/x", &mut out);
        assert_eq!(out, vec![0, 3]);
    }
}
