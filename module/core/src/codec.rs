//! A small byte codec for the module's serialized values (RDB payloads and the RESTORE commands
//! that AOF rewrite emits). Every payload starts with an encoding version byte; decoders match
//! on it and never change what an old version means.

pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(version: u8) -> Self {
        Writer { buf: vec![version] }
    }

    /// LEB128 unsigned varint.
    pub fn uint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// Zigzag varint, for signed deltas.
    pub fn int(&mut self, v: i64) {
        self.uint(((v << 1) ^ (v >> 63)) as u64);
    }

    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
}

pub type Decoded<T> = Result<T, &'static str>;

impl<'a> Reader<'a> {
    /// Splits off the version byte.
    pub fn new(buf: &'a [u8]) -> Decoded<(u8, Self)> {
        match buf.split_first() {
            Some((&version, rest)) => Ok((version, Reader { buf: rest })),
            None => Err("empty payload"),
        }
    }

    pub fn uint(&mut self) -> Decoded<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            if shift == 63 && b > 1 {
                return Err("varint overflow");
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint overflow")
    }

    pub fn int(&mut self) -> Decoded<i64> {
        let z = self.uint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    pub fn f64(&mut self) -> Decoded<f64> {
        if self.buf.len() < 8 {
            return Err("truncated double");
        }
        let (bytes, rest) = self.buf.split_at(8);
        self.buf = rest;
        Ok(f64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    /// A count of items that each take at least `min_item_bytes` bytes of what is left: a
    /// count the payload cannot hold is refused here, before anything is allocated for it.
    /// Decoders reserve at most this many items, so what they allocate stays within the size
    /// of an item in memory over `min_item_bytes` times the payload, whatever the count says.
    pub fn count(&mut self, min_item_bytes: usize) -> Decoded<usize> {
        debug_assert!(min_item_bytes > 0);
        let n = self.uint()?;
        if n > (self.buf.len() / min_item_bytes) as u64 {
            return Err("count larger than payload");
        }
        Ok(n as usize)
    }

    pub fn end(self) -> Decoded<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut w = Writer::new(7);
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            w.uint(v);
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            w.int(v);
        }
        w.f64(-0.5);
        let buf = w.finish();
        let (version, mut r) = Reader::new(&buf).unwrap();
        assert_eq!(version, 7);
        for v in [0, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(r.uint(), Ok(v));
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(r.int(), Ok(v));
        }
        assert_eq!(r.f64(), Ok(-0.5));
        assert_eq!(r.end(), Ok(()));
    }

    #[test]
    fn truncated_overlong_and_trailing_input_is_refused() {
        assert!(Reader::new(&[]).is_err());
        let (_, mut r) = Reader::new(&[1, 0x80]).unwrap();
        assert!(r.uint().is_err());
        let (_, mut r) = Reader::new(&[
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ])
        .unwrap();
        assert!(r.uint().is_err());
        let (_, mut r) = Reader::new(&[1, 0x05]).unwrap();
        assert!(r.count(1).is_err());
        let (_, r) = Reader::new(&[1, 0]).unwrap();
        assert!(r.end().is_err());
    }

    #[test]
    fn a_count_is_bounded_by_the_bytes_its_items_need() {
        // 3 items of at least 2 bytes fit in 6 bytes, not in 5; of 1 byte, in 3.
        let (_, mut r) = Reader::new(&[1, 3, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(r.count(2), Ok(3));
        let (_, mut r) = Reader::new(&[1, 3, 0, 0, 0, 0, 0]).unwrap();
        assert!(r.count(2).is_err());
        let (_, mut r) = Reader::new(&[1, 3, 0, 0, 0]).unwrap();
        assert_eq!(r.count(1), Ok(3));
        // 52-byte items: a count of 2 needs 104 bytes.
        let mut w = Writer::new(1);
        w.uint(2);
        let mut buf = w.finish();
        buf.extend([0; 103]);
        let (_, mut r) = Reader::new(&buf).unwrap();
        assert!(r.count(52).is_err());
        buf.push(0);
        let (_, mut r) = Reader::new(&buf).unwrap();
        assert_eq!(r.count(52), Ok(2));
    }
}
