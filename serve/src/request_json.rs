//! Bounded deserialisation of the parts of an inference request that a client can make
//! large: tensor data goes straight into `f32`s (4 bytes a value, where JSON takes at
//! least 2), parameters keep only the keys the server reads, and lists the server needs
//! one or a few of are cut short. Nothing goes through `serde_json::Value`, whose tree
//! costs about 50 times the text it holds.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The longest text kept to describe a bad value in an error message.
const SHOWN_CHARS: usize = 40;

thread_local! {
    /// Most values a tensor may keep on this thread (see [`with_value_cap`]). serde gives a
    /// `Deserialize` impl no context, hence a thread-local for the one number it needs.
    static VALUE_CAP: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Runs `parse` with tensors keeping at most `cap` values (the rest are only counted): a
/// request cannot need more than its largest batch holds, however many it sends.
pub fn with_value_cap<T>(cap: usize, parse: impl FnOnce() -> T) -> T {
    let before = VALUE_CAP.with(|c| c.replace(cap));
    let result = parse();
    VALUE_CAP.with(|c| c.set(before));
    result
}

/// A tensor's values, flattened from (possibly nested) JSON arrays, with the first value
/// that is not a number and the first that is not a byte, for the error messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorValues {
    /// The first values, up to the cap of [`with_value_cap`].
    pub values: Vec<f32>,
    /// How many values there were in all.
    pub count: usize,
    /// Index and text of the first value that is not a JSON number.
    pub first_non_number: Option<(usize, String)>,
    /// Index and text of the first value that is not an integer in 0..=255.
    pub first_non_byte: Option<(usize, String)>,
}

impl TensorValues {
    fn push_number(&mut self, value: f32, byte: bool, text: impl FnOnce() -> String) {
        if !byte && self.first_non_byte.is_none() {
            self.first_non_byte = Some((self.count, text()));
        }
        self.push(value);
    }

    fn push_other(&mut self, text: String) {
        let index = self.count;
        self.first_non_number.get_or_insert_with(|| (index, text.clone()));
        self.first_non_byte.get_or_insert((index, text));
        self.push(0.0);
    }

    fn push(&mut self, value: f32) {
        if self.count < VALUE_CAP.with(Cell::get) {
            self.values.push(value);
        }
        self.count += 1;
    }
}

impl<'de> Deserialize<'de> for TensorValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut values = TensorValues::default();
        Leaves(&mut values).deserialize(deserializer)?;
        Ok(values)
    }
}

/// Appends the leaves of one JSON value to the tensor.
struct Leaves<'a>(&'a mut TensorValues);

impl<'de> DeserializeSeed<'de> for Leaves<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Leaves<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers, flat or nested")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // serde_json's recursion limit (128) bounds the nesting.
        while seq.next_element_seed(Leaves(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push_number(v as f32, v <= 255, || v.to_string());
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push_number(v as f32, (0..=255).contains(&v), || v.to_string());
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // Like `Value::as_u64`, a number written with a fraction or exponent is not a byte.
        self.0.push_number(v as f32, false, || v.to_string());
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push_other(v.to_string());
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push_other(quoted(v));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push_other("null".into());
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.0.push_other("an object".into());
        Ok(())
    }
}

/// A parameter's value: the kinds the server reads, or a short description of another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Bool(bool),
    UInt(u64),
    /// Any other value, as text for error messages (cut to a few dozen characters).
    Other(String),
}

impl Param {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Param::UInt(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Bool(b) => write!(f, "{b}"),
            Param::UInt(n) => write!(f, "{n}"),
            Param::Other(text) => f.write_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParamVisitor)
    }
}

struct ParamVisitor;

impl<'de> Visitor<'de> for ParamVisitor {
    type Value = Param;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a parameter value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Param, E> {
        Ok(Param::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Param, E> {
        Ok(Param::UInt(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Param, E> {
        Ok(Param::Other(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Param, E> {
        Ok(Param::Other(v.to_string()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Param, E> {
        Ok(Param::Other(quoted(v)))
    }

    fn visit_unit<E>(self) -> Result<Param, E> {
        Ok(Param::Other("null".into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Param, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Param::Other("an array".into()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Param, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Param::Other("an object".into()))
    }
}

/// The parameter keys the server reads; others are skipped without being stored.
const PARAMETER_KEYS: [&str; 4] = ["binary_data_size", "binary_data_output", "binary_data", "classification"];

/// A `parameters` object, keeping only [`PARAMETER_KEYS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parameters(Vec<(&'static str, Param)>);

impl Parameters {
    /// The value of `key` (the last one when repeated).
    pub fn get(&self, key: &str) -> Option<&Param> {
        self.0.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for Parameters {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ParametersVisitor)
    }
}

struct ParametersVisitor;

impl<'de> Visitor<'de> for ParametersVisitor {
    type Value = Parameters;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a parameters object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parameters, A::Error> {
        let mut kept = Vec::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match PARAMETER_KEYS.iter().find(|&&k| k == key) {
                // Repeats replace the earlier value, so the list stays this short.
                Some(&known) => {
                    let value = map.next_value::<Param>()?;
                    kept.retain(|(k, _)| *k != known);
                    kept.push((known, value));
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Parameters(kept))
    }
}

/// The first element of a JSON array and how many it holds; the others are skipped
/// without being stored (the server accepts exactly one input).
#[derive(Debug, Clone, PartialEq)]
pub struct FirstOf<T> {
    pub first: Option<T>,
    pub count: usize,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for FirstOf<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(FirstOfVisitor(PhantomData))
    }
}

struct FirstOfVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for FirstOfVisitor<T> {
    type Value = FirstOf<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FirstOf<T>, A::Error> {
        let first = seq.next_element::<T>()?;
        let mut count = usize::from(first.is_some());
        while seq.next_element::<IgnoredAny>()?.is_some() {
            count += 1;
        }
        Ok(FirstOf { first, count })
    }
}

/// A JSON array of at most `MAX` elements (more is a parse error), for lists the server
/// reads a few elements of: shapes and requested outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounded<T, const MAX: usize>(pub Vec<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for Bounded<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(BoundedVisitor::<T, MAX>(PhantomData))
    }
}

struct BoundedVisitor<T, const MAX: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for BoundedVisitor<T, MAX> {
    type Value = Bounded<T, MAX>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of at most {MAX} elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bounded<T, MAX>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<T>()? {
            if items.len() == MAX {
                return Err(serde::de::Error::custom(format!("an array of more than {MAX} elements")));
            }
            items.push(item);
        }
        Ok(Bounded(items))
    }
}

/// `text` as a JSON string, cut to [`SHOWN_CHARS`] characters.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_arrays_flatten_and_bad_values_are_located() {
        let t: TensorValues = serde_json::from_str(r#"[[1, 2], [300, [4.5]], "x", null]"#).unwrap();
        assert_eq!(t.values, [1.0, 2.0, 300.0, 4.5, 0.0, 0.0]);
        assert_eq!(t.count, 6);
        assert_eq!(t.first_non_byte, Some((2, "300".into())));
        assert_eq!(t.first_non_number, Some((4, "\"x\"".into())));
    }

    #[test]
    fn values_past_the_cap_are_counted_not_kept() {
        let t: TensorValues = with_value_cap(2, || serde_json::from_str("[[1, 2], [3, 4]]").unwrap());
        assert_eq!((t.values.as_slice(), t.count), ([1.0, 2.0].as_slice(), 4));
        let t: TensorValues = serde_json::from_str("[1, 2, 3]").unwrap();
        assert_eq!(t.values.len(), 3, "the cap is restored afterwards");
    }

    #[test]
    fn parameters_keep_only_known_keys() {
        let p: Parameters =
            serde_json::from_str(r#"{"junk": [1, 2, {"a": 3}], "binary_data": true, "classification": -1}"#).unwrap();
        assert_eq!(p.get("binary_data"), Some(&Param::Bool(true)));
        assert_eq!(p.get("classification").unwrap().to_string(), "-1");
        assert_eq!(p.get("junk"), None);
        assert_eq!(p.0.len(), 2);
    }

    #[test]
    fn lists_are_cut_short() {
        let first: FirstOf<u32> = serde_json::from_str("[7, 8, {}]").unwrap();
        assert_eq!((first.first, first.count), (Some(7), 3));
        assert!(serde_json::from_str::<Bounded<u8, 2>>("[1, 2, 3]").unwrap_err().to_string().contains("more than 2"));
        assert_eq!(serde_json::from_str::<Bounded<u8, 2>>("[1, 2]").unwrap().0, [1, 2]);
    }
}
