//! Newest-first pages over one read model or several (an API node keeps one replica
//! per engine), and their cursors.
//!
//! With one read model a cursor is the last item's position (arrival sequence, fill
//! id), as it always was. With several it holds a position per read model
//! (`"12.-.0"`: before 12 in the first, from the newest in the second, nothing left in
//! the third), and the lists are merged newest first by time: each next page starts
//! exactly where the previous one stopped in every read model, so paging never skips
//! or repeats an item however the engines' clocks and rates differ.

use crate::foundation::ApiError;

/// Where a page starts in each read model: `None` from the newest, `Some(p)` before
/// position `p`.
pub type Cursor = Vec<Option<u64>>;

fn bad_cursor() -> ApiError {
    ApiError::invalid_parameter("cursor", "cursor must be the next_cursor of a previous page")
}

/// Reads a cursor for `n` read models (absent: from the newest in each).
pub fn parse(c: Option<&str>, n: usize) -> Result<Cursor, ApiError> {
    let Some(c) = c else {
        return Ok(vec![None; n]);
    };
    let parts: Vec<&str> = c.split('.').collect();
    if parts.len() != n {
        return Err(bad_cursor());
    }
    parts
        .iter()
        .map(|p| match *p {
            "-" if n > 1 => Ok(None),
            p => p.parse::<u64>().map(Some).map_err(|_| bad_cursor()),
        })
        .collect()
}

/// Writes a cursor (one read model: its position alone).
pub fn format(c: &[Option<u64>]) -> String {
    c.iter()
        .map(|p| p.map_or_else(|| "-".to_owned(), |v| v.to_string()))
        .collect::<Vec<_>>()
        .join(".")
}

/// Up to `limit` items from `lists` (each newest first, already starting at its
/// cursor), merged newest first by `when`; with the cursor of the next page when more
/// are left. `position` is an item's place in its own list (what a cursor holds).
pub fn page<T, K: Ord>(
    lists: Vec<Box<dyn Iterator<Item = T> + '_>>,
    cursor: &[Option<u64>],
    limit: usize,
    when: impl Fn(&T) -> K,
    position: impl Fn(&T) -> u64,
) -> (Vec<T>, Option<String>) {
    let mut heads: Vec<_> = lists.into_iter().map(Iterator::peekable).collect();
    let mut next: Cursor = cursor.to_vec();
    let mut items = Vec::new();
    while items.len() < limit {
        let newest = heads
            .iter_mut()
            .enumerate()
            .filter_map(|(k, h)| h.peek().map(|t| (k, when(t))))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(k, _)| k);
        let Some(item) = newest.and_then(|k| heads.get_mut(k).and_then(Iterator::next).map(|t| (k, t))) else {
            break;
        };
        if let Some(slot) = next.get_mut(item.0) {
            *slot = Some(position(&item.1));
        }
        items.push(item.1);
    }
    let more = heads.iter_mut().any(|h| h.peek().is_some());
    (items, more.then(|| format(&next)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Paging through several lists (each newest first, positions falling, times
        /// in any order across lists) returns every item exactly once, newest first
        /// by time within a page, and the pages meet exactly.
        #[test]
        fn pages_cover_every_item_once(
            lists in proptest::collection::vec(proptest::collection::vec(0u32..50, 0..30), 1..4),
            limit in 1usize..8,
        ) {
            // Item: (list, position, time). Position falls along a list; time too.
            let lists: Vec<Vec<(usize, u64, u32)>> = lists
                .iter()
                .enumerate()
                .map(|(k, times)| {
                    let mut t = times.clone();
                    t.sort_unstable_by(|a, b| b.cmp(a));
                    let n = t.len() as u64;
                    t.into_iter().enumerate().map(|(i, time)| (k, n - i as u64, time)).collect()
                })
                .collect();
            let mut cursor: Option<String> = None;
            let mut seen = Vec::new();
            for _ in 0..1000 {
                let c = parse(cursor.as_deref(), lists.len()).expect("our own cursor parses");
                let iters: Vec<Box<dyn Iterator<Item = (usize, u64, u32)>>> = lists
                    .iter()
                    .zip(&c)
                    .map(|(l, before)| {
                        let before = *before;
                        Box::new(l.iter().copied().filter(move |i| before.is_none_or(|b| i.1 < b)))
                            as Box<dyn Iterator<Item = _>>
                    })
                    .collect();
                let (items, next) = page(iters, &c, limit, |i| i.2, |i| i.1);
                prop_assert!(items.len() <= limit);
                prop_assert!(items.windows(2).all(|w| w[0].2 >= w[1].2), "newest first: {:?}", items);
                seen.extend(items);
                match next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
            let mut all: Vec<_> = lists.concat();
            all.sort_unstable();
            seen.sort_unstable();
            prop_assert_eq!(seen, all);
        }
    }

    #[test]
    fn cursors_read_back_and_damage_is_refused() {
        assert_eq!(parse(None, 2).ok(), Some(vec![None, None]));
        assert_eq!(parse(Some("12"), 1).ok(), Some(vec![Some(12)]));
        assert_eq!(parse(Some("12.-.0"), 3).ok(), Some(vec![Some(12), None, Some(0)]));
        assert_eq!(format(&[Some(12), None, Some(0)]), "12.-.0");
        assert_eq!(format(&[Some(7)]), "7");
        for bad in [
            "",
            "-",
            "x",
            "1.2",
            "1..2",
            "1.2.3.4",
            "-1.2.3",
            "1.2.",
            "99999999999999999999.1.1",
        ] {
            let n = if bad == "-" || bad == "x" || bad.is_empty() {
                1
            } else {
                3
            };
            assert!(parse(Some(bad), n).is_err(), "{bad:?}");
        }
    }
}
