//! RowBinary encoding of the sink's rows, done once per record on the decode thread.
//!
//! The sink keeps its batches as RowBinary bytes rather than as row structs: the structs
//! hold a heap string per column, and keeping 100,000 rows of them per batch, then freeing
//! them after the commit, cost more CPU in the allocator than decoding did (perf on the
//! benchmark). The encoding is the one the `clickhouse` crate's own `Insert<T>` writes for
//! the same `#[derive(Serialize)]` structs, for the types the rows use: little-endian
//! integers, strings and arrays prefixed by their LEB128 length, `Option` as a null byte
//! (`1` = NULL, `0` = a value follows).

use serde::Serialize;
use serde::ser::{self, Impossible};

/// A type the rows do not use (the encoder covers the row structs' types only).
#[derive(Debug, thiserror::Error)]
#[error("RowBinary encoding: {0}")]
pub struct EncodeError(String);

impl ser::Error for EncodeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

fn unsupported(what: &str) -> EncodeError {
    EncodeError(format!("{what} is not used by the sink's rows"))
}

/// Appends `row` in RowBinary to `out`.
pub fn write_row<T: Serialize + ?Sized>(row: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    row.serialize(&mut Encoder { out })
}

fn leb128(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

type R = Result<(), EncodeError>;

impl<'a, 'b> ser::Serializer for &'b mut Encoder<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeStruct = Self;
    type SerializeTupleStruct = Impossible<(), EncodeError>;
    type SerializeTupleVariant = Impossible<(), EncodeError>;
    type SerializeMap = Impossible<(), EncodeError>;
    type SerializeStructVariant = Impossible<(), EncodeError>;

    fn serialize_bool(self, v: bool) -> R {
        self.out.push(u8::from(v));
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> R {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> R {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> R {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> R {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> R {
        self.out.push(v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> R {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> R {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> R {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> R {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> R {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, _v: char) -> R {
        Err(unsupported("char"))
    }
    fn serialize_str(self, v: &str) -> R {
        leb128(v.len() as u64, self.out);
        self.out.extend_from_slice(v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        leb128(v.len() as u64, self.out);
        self.out.extend_from_slice(v);
        Ok(())
    }
    fn serialize_none(self) -> R {
        self.out.push(1);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        self.out.push(0);
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Err(unsupported("unit"))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> R {
        Err(unsupported("unit struct"))
    }
    fn serialize_unit_variant(self, _n: &'static str, _i: u32, _v: &'static str) -> R {
        Err(unsupported("enum"))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _n: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _value: &T,
    ) -> R {
        Err(unsupported("enum"))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, EncodeError> {
        let len = len.ok_or_else(|| unsupported("a sequence without a length"))?;
        leb128(len as u64, self.out);
        Ok(self)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }
    fn serialize_tuple_struct(
        self,
        _n: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, EncodeError> {
        Err(unsupported("tuple struct"))
    }
    fn serialize_tuple_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        Err(unsupported("enum"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
        Err(unsupported("map"))
    }
    fn serialize_struct(self, _n: &'static str, _len: usize) -> Result<Self, EncodeError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        Err(unsupported("enum"))
    }
}

impl<'a, 'b> ser::SerializeSeq for &'b mut Encoder<'a> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl<'a, 'b> ser::SerializeTuple for &'b mut Encoder<'a> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl<'a, 'b> ser::SerializeStruct for &'b mut Encoder<'a> {
    type Ok = ();
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _key: &'static str, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Sample {
        s: String,
        n: i64,
        small: i32,
        flag: u8,
        day: u16,
        count: u32,
        none: Option<i64>,
        some: Option<i32>,
        list: Vec<String>,
        bytes: Vec<u8>,
    }

    #[test]
    fn encodes_like_rowbinary() {
        let long = "x".repeat(200);
        let row = Sample {
            s: long.clone(),
            n: -2,
            small: 7,
            flag: 1,
            day: 20_454,
            count: 3,
            none: None,
            some: Some(-1),
            list: vec!["a".into(), String::new()],
            bytes: vec![1, 0],
        };
        let mut out = Vec::new();
        write_row(&row, &mut out).unwrap();
        let mut want = vec![0xc8, 0x01]; // LEB128(200)
        want.extend_from_slice(long.as_bytes());
        want.extend_from_slice(&(-2i64).to_le_bytes());
        want.extend_from_slice(&7i32.to_le_bytes());
        want.push(1);
        want.extend_from_slice(&20_454u16.to_le_bytes());
        want.extend_from_slice(&3u32.to_le_bytes());
        want.push(1); // NULL
        want.push(0);
        want.extend_from_slice(&(-1i32).to_le_bytes());
        want.extend_from_slice(&[2, 1, b'a', 0]);
        want.extend_from_slice(&[2, 1, 0]);
        assert_eq!(out, want);
    }
}
