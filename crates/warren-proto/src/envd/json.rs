//! serde helpers for the proto3 JSON mapping of scalar types, used with `#[serde(with)]`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize as _, Serializer};

/// `bytes`: standard base64 on output; any base64 alphabet, padded or not, on input.
pub mod base64_bytes {
    use super::*;

    /// Serializes as padded standard base64.
    pub fn serialize<S: Serializer>(v: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    /// Accepts standard or URL-safe base64, with or without padding.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        decode(&text).map(Bytes::from).map_err(de::Error::custom)
    }

    /// Decodes any of the accepted base64 forms.
    pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
        STANDARD
            .decode(text)
            .or_else(|_| STANDARD_NO_PAD.decode(text))
            .or_else(|_| URL_SAFE.decode(text))
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
    }
}

struct IntVisitor<T>(std::marker::PhantomData<T>);

impl<T> Visitor<'_> for IntVisitor<T>
where
    T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
{
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer or a string holding one")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom("integer out of range"))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // proto3 JSON allows `1.0` or `1e3` for integers as long as the value is integral.
        if v.fract() != 0.0 || !v.is_finite() {
            return Err(E::custom("not an integer"));
        }
        #[expect(
            clippy::cast_possible_truncation,
            reason = "checked integral just above"
        )]
        let i = v as i64;
        T::try_from(i).map_err(|_| E::custom("integer out of range"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.trim()
            .parse()
            .map_err(|_| E::custom("invalid integer string"))
    }
}

/// `int64`: a string on output, a string or a number on input.
pub mod int64 {
    use super::*;

    /// Serializes as a decimal string.
    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    /// Accepts a number or a decimal string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_any(IntVisitor(std::marker::PhantomData))
    }
}

/// `uint32`/`int32`/`sint32`: a number on output, a number or a string on input.
pub mod int32 {
    use super::*;

    /// Serializes as a number.
    pub fn serialize<T: serde::Serialize, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    /// Accepts a number or a decimal string.
    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
    {
        d.deserialize_any(IntVisitor(std::marker::PhantomData))
    }
}

/// `google.protobuf.Timestamp` as RFC 3339 with a `Z` suffix and 0, 3, 6 or 9 fraction digits.
pub mod timestamp {
    use chrono::{DateTime, SecondsFormat, Utc};

    use super::*;

    /// Serializes a set timestamp (the field is skipped when `None`).
    pub fn serialize<S: Serializer>(v: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => s.serialize_none(),
        }
    }

    /// Parses RFC 3339 with any offset.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| {
            DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(de::Error::custom)
        })
        .transpose()
    }
}

/// Whether a value equals its type's default (for `skip_serializing_if`).
pub fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Declares a proto enum: written as its name, read from its name or number (unknown
/// numbers and names read as the zero value, as proto3 open enums allow).
macro_rules! proto_enum {
    (
        $(#[$m:meta])*
        $name:ident {
            $($(#[$vm:meta])* $variant:ident = $num:literal => $text:literal,)+
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            #[default]
            $($(#[$vm])* $variant = $num,)+
        }

        impl $name {
            /// The proto name of the value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// The value with this number, if any.
            pub fn from_number(n: i64) -> Option<Self> {
                match n { $($num => Some($name::$variant),)+ _ => None }
            }

            /// The value with this proto name, if any.
            pub fn from_name(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = serde_json::Value::deserialize(d)?;
                let parsed = match &v {
                    serde_json::Value::String(s) => Self::from_name(s),
                    serde_json::Value::Number(n) => n.as_i64().and_then(Self::from_number),
                    _ => return Err(serde::de::Error::custom("enum must be a name or a number")),
                };
                Ok(parsed.unwrap_or_default())
            }
        }
    };
}
pub(crate) use proto_enum;
