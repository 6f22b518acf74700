//! Entry points of the fuzz targets (`fuzz/`, `make fuzz`), also run by the regression
//! tests over every input kept in `fuzz/regressions/` and `fuzz/seeds/`. Each returns
//! normally for any input or panics with the property it found broken.

use crate::{DeadLetter, Event, decode, encode};

/// The wire-format and Avro decoders: any bytes decode to an error or to a value, never a
/// panic; a decoded value encodes, and decodes back to the same value.
pub fn wire_decode(data: &[u8]) {
    if let Ok(ev) = decode::<Event>(data) {
        let bytes = encode(&ev).expect("a decoded event must encode");
        let again = decode::<Event>(&bytes).expect("a re-encoded event must decode");
        assert_eq!(again, ev, "event round trip");
    }
    if let Ok(dl) = decode::<DeadLetter>(data) {
        let bytes = encode(&dl).expect("a decoded dead letter must encode");
        let again = decode::<DeadLetter>(&bytes).expect("a re-encoded dead letter must decode");
        assert_eq!(again, dl, "dead letter round trip");
    }
}
