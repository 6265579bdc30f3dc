//! What every event matching a rule condition must satisfy, derived in one walk over the
//! condition. A `Domain` says what one comparison requires and how requirements combine
//! (the syscalls an event can come from, the paths of an open, ...); `f in (a, b)` reads as
//! `f = a or f = b`, and a negation requires nothing.

use std::collections::BTreeSet;

use super::expr::{Expr, Literal, Op};
use super::fields;

pub(crate) trait Domain {
    type Req;
    /// Requires nothing: any event may match.
    fn anything(&self) -> Self::Req;
    /// What `field op value` requires.
    fn leaf(&self, field: &str, op: Op, value: &Literal) -> Self::Req;
    /// What all of `parts` holding requires.
    fn all(&self, parts: Vec<Self::Req>) -> Self::Req;
    /// What one of `parts` holding requires.
    fn one_of(&self, parts: Vec<Self::Req>) -> Self::Req;
}

/// What an event matching `e` must satisfy, in `domain`'s terms.
pub(crate) fn required<D: Domain>(domain: &D, e: &Expr) -> D::Req {
    match e {
        Expr::Cmp { field, op, value } => domain.leaf(fields::name(*field), *op, value),
        Expr::In { field, set } => domain.one_of(
            set.iter()
                .map(|v| domain.leaf(fields::name(*field), Op::Eq, v))
                .collect(),
        ),
        Expr::And(parts) => domain.all(parts.iter().map(|p| required(domain, p)).collect()),
        Expr::Or(parts) => domain.one_of(parts.iter().map(|p| required(domain, p)).collect()),
        Expr::Not(_) => domain.anything(),
    }
}

/// For domains whose requirement is a set of allowed values (`None`: any value): all parts
/// holding allows what every part that says allows.
pub(crate) fn all_of_sets<T: Ord>(parts: Vec<Option<BTreeSet<T>>>) -> Option<BTreeSet<T>> {
    parts
        .into_iter()
        .flatten()
        .reduce(|a, b| a.into_iter().filter(|v| b.contains(v)).collect())
}

/// One part holding allows what any part allows (`None` if one allows anything).
pub(crate) fn one_of_sets<T: Ord>(parts: Vec<Option<BTreeSet<T>>>) -> Option<BTreeSet<T>> {
    parts.into_iter().try_fold(BTreeSet::new(), |mut all, p| {
        all.extend(p?);
        Some(all)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_intersect_under_all_and_join_under_one_of() {
        let set = |v: &[u8]| Some(v.iter().copied().collect::<BTreeSet<u8>>());
        assert_eq!(
            all_of_sets(vec![set(&[1, 2]), None, set(&[2, 3])]),
            set(&[2])
        );
        assert_eq!(all_of_sets::<u8>(vec![None, None]), None);
        assert_eq!(one_of_sets(vec![set(&[1]), set(&[3])]), set(&[1, 3]));
        assert_eq!(one_of_sets(vec![set(&[1]), None]), None);
        assert_eq!(one_of_sets::<u8>(vec![]), set(&[]));
    }
}
