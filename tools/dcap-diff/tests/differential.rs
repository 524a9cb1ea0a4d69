//! veil's TDX verifier (veil_agent::tdx::verify::verify_tdx, what `veil verify` and the broker
//! run) against dcap-qvl's (`QuoteVerifier::verify`) on the same quote, collateral, root and
//! time: every quote in ../shared/testdata/tdx with every collateral there at several times,
//! byte-flipped copies, and the forged cases of agent/tests/tdx_forged.rs (a test PKI shaped like
//! Intel's; both verifiers take its root). Each verdict is "accepted with status S" or
//! "refused". The verdicts must agree, except where [`EXPECTED_DIFFERENCES`] names the case and
//! says why; an explained case that stops differing fails too, so the explanations stay true.

#[path = "../../../agent/tests/common/test_pki.rs"]
#[allow(dead_code)]
mod test_pki;

#[path = "../../../agent/tests/common/tdx_forge.rs"]
#[allow(dead_code)]
mod tdx_forge;

use std::path::PathBuf;

use tdx_forge::*;
use test_pki::{Spec, crl};
use veil_agent::tdx::collateral::{Collateral, NOT_SUPPORTED, parse_time};
use veil_agent::tdx::verify::{INTEL_SGX_ROOT_CA, TdxPolicy, verify_tdx};

/// The shared test corpus (as agent's tests find it).
fn testdata(sub: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata").join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("VEIL_REQUIRE_TESTDATA").is_some() {
        panic!("test corpus {} is missing and VEIL_REQUIRE_TESTDATA is set", dir.display());
    }
    eprintln!("!!! SKIPPED: test corpus {} is absent !!!", dir.display());
    None
}

/// Every status either verifier may give; the operator's allow-list is not what is compared.
const ALL_STATUSES: [&str; 8] = [
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
    NOT_SUPPORTED,
];

/// Verdicts that differ, by case name, and why. Each is checked to still differ.
const EXPECTED_DIFFERENCES: &[(&str, &str)] = &[
    (
        "real tdx_quote byte 2000 flipped",
        "byte 2000 is a line break inside the PCK certificate's PEM (0x0A becomes 0x0B): the pem crate \
         dcap-qvl uses skips it as whitespace, so the certificate's bytes are unchanged and it accepts; \
         veil decodes PEM strictly (RFC 7468, der's decoder) and refuses a quote whose certification \
         data is not well-formed PEM. Stricter, and no forgery either way.",
    ),
    (
        "forged PCK issued by the root",
        "Intel's PCK certificate profile has the PCK issued by the Intel SGX PCK Platform or Processor \
         CA, never by the root; veil checks the path's shape (agent::pki Profile::intermediates), \
         dcap-qvl only that some valid path to the root exists.",
    ),
    (
        "forged PCK under another name",
        "veil checks the PCK leaf's subject (CN \"Intel SGX PCK Certificate\", Intel's profile); \
         dcap-qvl does not look at the leaf's name. Both check the signatures, CA flags and CRLs.",
    ),
];

#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Accepted(String),
    Refused(String),
}

fn ours(quote: &[u8], collateral: &serde_json::Value, root_der: &[u8], now: u64) -> Verdict {
    let c = match Collateral::from_json(&serde_json::to_vec(collateral).unwrap()) {
        Ok(c) => c,
        Err(e) => return Verdict::Refused(e),
    };
    let policy = TdxPolicy {
        root: root_der.to_vec(),
        test_root: true,
        collateral: c,
        allowed_status: ALL_STATUSES.iter().map(|s| s.to_string()).collect(),
        reference: None,
        allow_missing_crl: false,
        allow_service_td: false,
    };
    match verify_tdx(quote, None, &policy, now) {
        Ok(v) => Verdict::Accepted(v.verdict.status),
        Err(e) => Verdict::Refused(e),
    }
}

fn theirs(quote: &[u8], collateral: &serde_json::Value, root_der: &[u8], now: u64) -> Verdict {
    let c: dcap_qvl::QuoteCollateralV3 = match serde_json::from_value(collateral.clone()) {
        Ok(c) => c,
        Err(e) => return Verdict::Refused(format!("collateral: {e}")),
    };
    match dcap_qvl::verify::QuoteVerifier::new(root_der.to_vec()).verify(quote, &c, now) {
        Ok(r) => Verdict::Accepted(r.status),
        Err(e) => Verdict::Refused(format!("{e:#}")),
    }
}

/// Do the verdicts agree? A TCB below every level Intel lists is one verdict said two ways:
/// veil names it TcbNotSupported (a status no operator allow-list contains by default, so the
/// evidence is refused), dcap-qvl refuses with "No matching TCB level found".
fn agree(a: &Verdict, b: &Verdict) -> bool {
    match (a, b) {
        (Verdict::Accepted(x), Verdict::Accepted(y)) => x == y,
        (Verdict::Refused(_), Verdict::Refused(_)) => true,
        (Verdict::Accepted(s), Verdict::Refused(e)) => s == NOT_SUPPORTED && e.contains("No matching TCB level"),
        (Verdict::Refused(_), Verdict::Accepted(_)) => false,
    }
}

struct Case {
    name: String,
    quote: Vec<u8>,
    collateral: serde_json::Value,
    root: Vec<u8>,
    now: u64,
}

/// A quote file: raw, or hex text ("0x..." as dcap-qvl's samples are).
fn read_quote(path: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "hex") {
        let text = String::from_utf8(bytes).unwrap();
        hex::decode(text.trim().trim_start_matches("0x")).unwrap()
    } else {
        bytes
    }
}

fn intel_root() -> Vec<u8> {
    veil_agent::pki::to_der(INTEL_SGX_ROOT_CA.as_bytes()).unwrap()
}

/// The real corpus: every quote with every collateral, at a time inside the collateral's
/// validity, before its issue and after its nextUpdate; then byte flips of the two quotes whose
/// collateral is theirs, and their collateral without a CRL.
fn real_cases() -> Vec<Case> {
    let Some(tdx) = testdata("tdx") else { return Vec::new() };
    let mut quotes = Vec::new();
    for dir in
        ["quotes/dcap-qvl", "quotes/entropyxyz-tdx-quote", "quotes/go-tdx-guest", "ccel-rtmr-replay/go-tdx-guest"]
    {
        let d = tdx.join(dir);
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        let mut names: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            if n.ends_with(".dat") || n.ends_with(".hex") || n == "tdx_quote" || n == "tdx_quote_outdated" {
                quotes.push((format!("{dir}/{n}"), read_quote(&p)));
            }
        }
    }
    let mut collaterals = Vec::new();
    for n in ["tdx_quote_collateral.json", "tdx_quote_outdated_collateral.json"] {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(tdx.join("quotes/dcap-qvl").join(n)).unwrap()).unwrap();
        let issued = |k: &str| {
            let doc: serde_json::Value = serde_json::from_str(v[k].as_str().unwrap()).unwrap();
            (
                parse_time(doc["issueDate"].as_str().unwrap()).unwrap(),
                parse_time(doc["nextUpdate"].as_str().unwrap()).unwrap(),
            )
        };
        let (t0, t1) = issued("tcb_info");
        let (q0, q1) = issued("qe_identity");
        collaterals.push((
            n.to_string(),
            v,
            [("valid", t0.max(q0) + 3600), ("before", t0.min(q0) - 86_400), ("after", t1.max(q1) + 1)],
        ));
    }
    let root = intel_root();
    let mut cases = Vec::new();
    for (qn, q) in &quotes {
        for (cn, c, times) in &collaterals {
            for (tn, t) in times {
                cases.push(Case {
                    name: format!("real {qn} + {cn} @{tn}"),
                    quote: q.clone(),
                    collateral: c.clone(),
                    root: root.clone(),
                    now: *t,
                });
            }
        }
    }
    // Byte flips of the quotes with their own collateral: header, body, signature, QE report,
    // QE authentication data, certification data.
    for (qn, cn) in [("tdx_quote", 0), ("tdx_quote_outdated", 1)] {
        let q = &quotes.iter().find(|(n, _)| n == &format!("quotes/dcap-qvl/{qn}")).unwrap().1;
        let (_, c, times) = &collaterals[cn];
        for offset in
            [1usize, 12, 20, 48, 49, 120, 124, 200, 600, 640, 700, 800, 1000, 1100, 1300, 1500, 2000, 3000, 4000]
        {
            if offset >= q.len() {
                continue;
            }
            let mut m = q.clone();
            m[offset] ^= 0x01;
            cases.push(Case {
                name: format!("real {qn} byte {offset} flipped"),
                quote: m,
                collateral: c.clone(),
                root: root.clone(),
                now: times[0].1,
            });
        }
        for field in ["pck_crl", "root_ca_crl"] {
            let mut c2 = c.clone();
            c2.as_object_mut().unwrap().remove(field);
            cases.push(Case {
                name: format!("real {qn} without {field}"),
                quote: q.clone(),
                collateral: c2,
                root: root.clone(),
                now: times[0].1,
            });
        }
        let mut c3 = c.clone();
        let tcb = c3["tcb_info"].as_str().unwrap().replace("\"OutOfDate\"", "\"UpToDate\"");
        c3["tcb_info"] = serde_json::Value::from(tcb);
        cases.push(Case {
            name: format!("real {qn} with its TCB info relabelled (Intel's signature kept)"),
            quote: q.clone(),
            collateral: c3,
            root: root.clone(),
            now: times[0].1,
        });
    }
    cases
}

/// The forged corpus: agent/tests/tdx_forged.rs's cases, built with the test PKI.
fn forged_cases() -> Vec<Case> {
    let Some(real) = real() else { return Vec::new() };
    let pki = pki(&real);
    let at = parse_time("2025-06-19T12:00:00Z").unwrap();
    let honest = format!("{}{}{}", pki.pck.pem, pki.platform.pem, pki.root.pem);
    let tcb_chain = format!("{}{}", pki.tcb.pem, pki.root.pem);
    let base = QuoteParts::from_real(&real);
    let coll = || Coll::from_real(&real, &pki);
    let mut cases = Vec::new();
    let mut add = |name: &str, quote: Vec<u8>, collateral: serde_json::Value| {
        cases.push(Case { name: format!("forged {name}"), quote, collateral, root: pki.root.der.clone(), now: at });
    };
    add("unmodified", base.build(&pki.pck, &honest), coll().json(&pki.tcb, &tcb_chain));

    // Finding 1: chains outside Intel's profile.
    let sub = pck_spec(&real, 30).signed_by(&pki.pck);
    let chain = format!("{}{}{}{}", sub.pem, pki.pck.pem, pki.platform.pem, pki.root.pem);
    add("PCK leaf issues the QE's signer", base.build(&sub, &chain), coll().json(&pki.tcb, &tcb_chain));
    let mid = Spec::ca("Intel SGX PCK Processor CA", None, 32).signed_by(&pki.platform);
    let pck2 = pck_spec(&real, 33).signed_by(&mid);
    let chain = format!("{}{}{}{}", pck2.pem, mid.pem, pki.platform.pem, pki.root.pem);
    add("Platform CA path length exceeded", base.build(&pck2, &chain), coll().json(&pki.tcb, &tcb_chain));
    let direct = pck_spec(&real, 34).signed_by(&pki.root);
    let chain = format!("{}{}", direct.pem, pki.root.pem);
    add("PCK issued by the root", base.build(&direct, &chain), coll().json(&pki.tcb, &tcb_chain));
    let mut named = pck_spec(&real, 35);
    named.cn = "Intel SGX PCK Certificate (not)";
    let named = named.signed_by(&pki.platform);
    let chain = format!("{}{}{}", named.pem, pki.platform.pem, pki.root.pem);
    add("PCK under another name", base.build(&named, &chain), coll().json(&pki.tcb, &tcb_chain));
    let mut ca_leaf = pck_spec(&real, 38);
    ca_leaf.ca = Some(Some(0));
    let ca_leaf = ca_leaf.signed_by(&pki.platform);
    let chain = format!("{}{}{}", ca_leaf.pem, pki.platform.pem, pki.root.pem);
    add("PCK leaf is a CA", base.build(&ca_leaf, &chain), coll().json(&pki.tcb, &tcb_chain));
    let mut old = pck_spec(&real, 39);
    old.valid = ((2018, 1, 1), (2024, 1, 1));
    let old = old.signed_by(&pki.platform);
    let chain = format!("{}{}{}", old.pem, pki.platform.pem, pki.root.pem);
    add("PCK expired", base.build(&old, &chain), coll().json(&pki.tcb, &tcb_chain));

    // Finding 2: collateral signed by another certificate of the root.
    let quote = base.build(&pki.pck, &honest);
    let mut c = coll();
    c.tcb_info = c.tcb_info.replace("\"OutOfDate\"", "\"UpToDate\"");
    add("TCB info relabelled and signed by the PCK", quote.clone(), c.json(&pki.pck, &honest));
    let fake = Spec::leaf(TCB_SIGNING, 40).signed_by(&pki.platform);
    let fake_chain = format!("{}{}{}", fake.pem, pki.platform.pem, pki.root.pem);
    add("TCB info signed by a TCB-signing name under the Platform CA", quote.clone(), coll().json(&fake, &fake_chain));

    // Finding 3: CRLs.
    let mut c = coll();
    c.pck_crl = Some(crl(&pki.platform, (2025, 6, 1), (2025, 7, 1), &[3]));
    add("PCK revoked", quote.clone(), c.json(&pki.tcb, &tcb_chain));
    let mut c = coll();
    c.root_crl = Some(crl(&pki.root, (2025, 6, 1), (2025, 7, 1), &[2]));
    add("Platform CA revoked", quote.clone(), c.json(&pki.tcb, &tcb_chain));
    let mut c = coll();
    c.root_crl = Some(crl(&pki.root, (2025, 6, 1), (2025, 7, 1), &[4]));
    add("TCB signing certificate revoked", quote.clone(), c.json(&pki.tcb, &tcb_chain));
    let mut c = coll();
    c.pck_crl = Some(crl(&pki.platform, (2025, 5, 1), (2025, 6, 1), &[]));
    add("PCK CRL stale", quote.clone(), c.json(&pki.tcb, &tcb_chain));
    let other = Spec::ca(PLATFORM_CA, Some(0), 2).signed_by(&pki.root);
    let mut c = coll();
    c.pck_crl = Some(crl(&other, (2025, 6, 1), (2025, 7, 1), &[]));
    add("PCK CRL signed by another key", quote.clone(), c.json(&pki.tcb, &tcb_chain));

    // Finding 4: the module identity of major version 0.
    let mut v0 = base.clone();
    v0.body[TEE_TCB_SVN + 1] = 0;
    add("module major 0", v0.build(&pki.pck, &honest), coll().json(&pki.tcb, &tcb_chain));
    let mut m = v0.clone();
    m.body[MR_SIGNER_SEAM..MR_SIGNER_SEAM + 48].fill(0xAA);
    add("module major 0, MRSIGNER_SEAM 0xAA", m.build(&pki.pck, &honest), coll().json(&pki.tcb, &tcb_chain));
    let mut m = v0.clone();
    m.body[SEAM_ATTRIBUTES..SEAM_ATTRIBUTES + 8].copy_from_slice(&0x8000000000000001u64.to_le_bytes());
    add("module major 0, SEAM_ATTRIBUTES set", m.build(&pki.pck, &honest), coll().json(&pki.tcb, &tcb_chain));
    let mut m = base.clone();
    m.body[MR_SIGNER_SEAM] ^= 1;
    add("module major 1, MRSIGNER_SEAM changed", m.build(&pki.pck, &honest), coll().json(&pki.tcb, &tcb_chain));

    // Finding 5: TD report 1.5.
    let tee = real.quote.body.tee_tcb_svn;
    let td15 = base.clone().td15(tee, [0; 48]);
    add("TD 1.5, no service TD", td15.build(&pki.pck, &honest), coll().json(&pki.tcb, &tcb_chain));
    let td15 = base.clone().td15(tee, [0x5E; 48]);
    add("TD 1.5, MRSERVICETD set", td15.build(&pki.pck, &honest), coll().json(&pki.tcb, &tcb_chain));
    let mut low = base.clone().td15([0; 16], [0; 48]);
    low.body[TEE_TCB_SVN] = tee[0];
    add("TD 1.5, current TCB below every level", low.build(&pki.pck, &honest), coll().json(&pki.tcb, &tcb_chain));

    // Finding 6: the QE and the TD attributes.
    let mut m = base.clone();
    m.qe_report[128 + 4] = 0x4F;
    add("QE MRSIGNER 0x6F -> 0x4F", m.build(&pki.pck, &honest), coll().json(&pki.tcb, &tcb_chain));
    let mut m = base.clone();
    m.header[12] ^= 0xFF;
    add("QE vendor ID changed", m.build(&pki.pck, &honest), coll().json(&pki.tcb, &tcb_chain));
    for (name, f) in [
        ("TD attributes: reserved TUD bit 1", (|a: u64| a | 0b10) as fn(u64) -> u64),
        ("TD attributes: SEPT_VE_DISABLE clear", |a| a & !(1 << 28)),
        ("TD attributes: debug", |a| a | 1),
        ("TD attributes: profiling (bit 4)", |a| a | 0x10),
        ("TD attributes: migratable", |a| a | (1 << 29)),
        ("TD attributes: SERVTD_EXT", |a| a | (1 << 17)),
        ("TD attributes: reserved bit 40", |a| a | (1 << 40)),
        ("TD attributes: PKS", |a| a | (1 << 30)),
    ] {
        let mut m = base.clone();
        let a = u64::from_le_bytes(m.body[TD_ATTRIBUTES..TD_ATTRIBUTES + 8].try_into().unwrap());
        m.body[TD_ATTRIBUTES..TD_ATTRIBUTES + 8].copy_from_slice(&f(a).to_le_bytes());
        add(name, m.build(&pki.pck, &honest), coll().json(&pki.tcb, &tcb_chain));
    }
    cases
}

#[test]
fn veil_and_dcap_qvl_agree_or_the_difference_is_explained() {
    let cases: Vec<Case> = real_cases().into_iter().chain(forged_cases()).collect();
    if cases.is_empty() {
        return;
    }
    let mut unexplained = Vec::new();
    let mut stale = Vec::new();
    let (mut agreed, mut explained) = (0, 0);
    for case in &cases {
        let (a, b) = (
            ours(&case.quote, &case.collateral, &case.root, case.now),
            theirs(&case.quote, &case.collateral, &case.root, case.now),
        );
        let why = EXPECTED_DIFFERENCES.iter().find(|(n, _)| *n == case.name).map(|(_, w)| *w);
        match (agree(&a, &b), why) {
            (true, None) => agreed += 1,
            (false, Some(_)) => explained += 1,
            (false, None) => unexplained.push(format!("{}:\n    veil:     {a:?}\n    dcap-qvl: {b:?}", case.name)),
            (true, Some(w)) => stale.push(format!("{} (explained as {w:?}) now agrees: {a:?} / {b:?}", case.name)),
        }
        eprintln!("{:<90} veil {:<40} dcap-qvl {}", case.name, short(&a), short(&b));
    }
    eprintln!("{agreed} cases agree, {explained} differ as explained, of {}", cases.len());
    assert!(unexplained.is_empty(), "verdicts differ without an explanation:\n{}", unexplained.join("\n"));
    assert!(stale.is_empty(), "explained differences that no longer differ:\n{}", stale.join("\n"));
    assert!(cases.iter().any(|c| c.name == "forged unmodified"), "the forged corpus ran");
}

fn short(v: &Verdict) -> String {
    match v {
        Verdict::Accepted(s) => format!("accepted {s}"),
        Verdict::Refused(e) => format!("refused: {}", e.chars().take(60).collect::<String>()),
    }
}
