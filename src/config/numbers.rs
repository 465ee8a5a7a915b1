//! Whole numbers, strictly: the `config` crate would round `settle_seconds = 1.5` to 2 and
//! saturate an out-of-range `lock.key`; these deserializers refuse both, and negative counts,
//! naming the value (the key is added by the caller's error).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

struct Whole<T>(std::marker::PhantomData<T>);

macro_rules! strict {
    ($name:ident, $ty:ty) => {
        /// A whole number of this type; floats, out-of-range values and text refused.
        pub fn $name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
            deserializer.deserialize_any(Whole::<$ty>(std::marker::PhantomData))
        }

        impl<'de> Visitor<'de> for Whole<$ty> {
            type Value = $ty;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a whole number from {} to {}", <$ty>::MIN, <$ty>::MAX)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                <$ty>::try_from(v).map_err(|_| E::custom(out_of_range(v, &self)))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                <$ty>::try_from(v).map_err(|_| E::custom(out_of_range(v, &self)))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<$ty, E> {
                // Beyond 2^53 the config crate has already turned the text into a float.
                if v.fract() == 0.0 && v.abs() >= 9_007_199_254_740_992.0 {
                    return Err(E::custom(format!(
                        "{v:e} is out of range (expected {})",
                        Expecting(&self)
                    )));
                }
                Err(E::custom(format!(
                    "{v} is not a whole number (expected {})",
                    Expecting(&self)
                )))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                let trimmed = v.trim();
                trimmed
                    .strip_prefix('+')
                    .unwrap_or(trimmed)
                    .replace('_', "")
                    .parse::<$ty>()
                    .map_err(|_| E::custom(format!("`{v}` is not {}", Expecting(&self))))
            }
        }
    };
}

strict!(whole_u64, u64);
strict!(whole_usize, usize);
strict!(whole_i64, i64);

fn out_of_range<V: fmt::Display, T>(v: V, visitor: &Whole<T>) -> String
where
    Whole<T>: for<'de> Visitor<'de>,
{
    format!("{v} is out of range (expected {})", Expecting(visitor))
}

/// A visitor's "expecting" text as a Display value.
struct Expecting<'a, V>(&'a V);

impl<'de, V: Visitor<'de>> fmt::Display for Expecting<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }
}
