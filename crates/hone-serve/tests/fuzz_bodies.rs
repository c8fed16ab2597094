//! Fuzz targets for the request bodies the server parses (TEI's and TGI's shapes).
//! `cargo test` runs each on random inputs for a bounded time; `cargo bolero test -p
//! hone-serve --test fuzz_bodies <target>` (nightly, cargo-bolero) runs it coverage-guided.
//! The property: no panic; `tests/server.rs` checks what the routes answer.

use hone_serve::api::{EmbedRequest, GenerateRequest, NerRequest, PredictRequest, TokenizeRequest};

#[test]
fn request_bodies() {
    bolero::check!().for_each(|input: &[u8]| {
        let _ = serde_json::from_slice::<EmbedRequest>(input);
        let _ = serde_json::from_slice::<PredictRequest>(input);
        let _ = serde_json::from_slice::<TokenizeRequest>(input);
        let _ = serde_json::from_slice::<NerRequest>(input);
        let _ = serde_json::from_slice::<GenerateRequest>(input);
    });
}
