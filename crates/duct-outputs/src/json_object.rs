//! A JSON object written straight from an event's pairs (attributes,
//! tags), for the outputs that send JSON documents: keys in byte order and
//! a repeated key's last value, as a `serde_json::Map` would hold them,
//! without building one per event.

use serde::{Serialize, Serializer};

/// The pairs of an object, sorted and with one entry per key.
pub struct Object<K, V>(Vec<(K, V)>);

impl<K: AsRef<str>, V: Serialize> Object<K, V> {
    /// `pairs` as an object: sorted by key (stable), a repeated key keeping
    /// its last value.
    pub fn new(mut pairs: Vec<(K, V)>) -> Self {
        pairs.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        // `dedup_by` keeps the first of a run: hand it each later value.
        pairs.dedup_by(|later, kept| {
            let same = later.0.as_ref() == kept.0.as_ref();
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        Object(pairs)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: AsRef<str>, V: Serialize> Serialize for Object<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k.as_ref(), v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_and_the_last_value_of_a_key_wins_as_in_a_map() {
        let pairs = vec![("b", "1"), ("a", "2"), ("b", "3"), ("c", "4"), ("b", "5"), ("a", "6")];
        let map: serde_json::Map<String, serde_json::Value> =
            pairs.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        let object = Object::new(pairs);
        assert_eq!(
            serde_json::to_string(&object).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(serde_json::to_string(&object).unwrap(), r#"{"a":"6","b":"5","c":"4"}"#);
        assert!(Object::<&str, &str>::new(Vec::new()).is_empty());
    }
}
