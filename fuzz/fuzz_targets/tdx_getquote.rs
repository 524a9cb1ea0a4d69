//! What the VMM writes into the GetQuote buffer, and the `tdx` evidence a broker receives: a
//! quote accepted from the buffer lies inside it; evidence JSON never panics the parser.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::tdx::getquote;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(q)) = getquote::response(data) {
        assert!(q.len() + getquote::HEADER <= data.len() && !q.is_empty());
        let _ = veil_agent::tdx::quote::parse(&q);
    }
    if let Ok(v) = veil_agent::json::from_slice(data) {
        let _ = getquote::from_evidence(&v);
    }
});
