//! The one rule for the hub's ids: `<tag>-<n>`, where the tag is a hub's run or a broker's
//! epoch (1 to 64 ASCII letters and digits) and `n` counts up from 1 within it.
//!
//! Printed by [`id_of`], read back by [`parse`]: a `Last-Event-ID` names a position only if it is
//! exactly what [`id_of`] would print (no sign, no leading zero), so two spellings never name
//! one event.

/// The id of event `n` under `tag`.
pub(super) fn id_of(tag: &str, n: u64) -> String {
    use std::fmt::Write;
    let mut id = String::with_capacity(tag.len() + 21);
    id.push_str(tag);
    let _ = write!(id, "-{n}");
    id
}

/// Whether `tag` can be the first half of an id: ASCII letters and digits, 1 to 64 of them.
pub(super) fn valid_tag(tag: &str) -> bool {
    (1..=64).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The tag and number of an id that [`id_of`] printed, or `None` for any other text.
pub(super) fn parse(id: &str) -> Option<(&str, u64)> {
    let (tag, n) = id.split_once('-')?;
    let canonical = !n.is_empty()
        && n.len() <= 20
        && n.bytes().all(|b| b.is_ascii_digit())
        && !n.starts_with('0');
    if !valid_tag(tag) || !canonical {
        return None;
    }
    Some((tag, n.parse().ok()?))
}

/// A random tag of `hex_digits` (at most 16) hexadecimal digits, different per call and per
/// process: a hub's run, a broker's epoch. Ids carrying another tag are recognised as unknown.
pub(super) fn random_tag(hex_digits: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    let hex = format!("{:016x}", hasher.finish());
    hex[16 - hex_digits.min(16)..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_the_printed_spelling_parses() {
        assert_eq!(parse("a1b2-7"), Some(("a1b2", 7)));
        for other in [
            "a1b2-07", "a1b2-+7", "a1b2-", "-7", "a-b-7", "a1b2-7 ", "a_b-7", "a-0",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
        assert_eq!(parse(&"x".repeat(65).replace("x", "a")), None);
    }

    #[test]
    fn random_tags_are_valid_and_differ() {
        let (a, b) = (random_tag(12), random_tag(12));
        assert!(valid_tag(&a) && valid_tag(&b));
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
    }

    proptest! {
        #[test]
        fn every_printed_id_parses_back(tag in "[a-zA-Z0-9]{1,64}", n in 1u64..) {
            let id = id_of(&tag, n);
            prop_assert_eq!(parse(&id), Some((tag.as_str(), n)));
        }
    }
}
