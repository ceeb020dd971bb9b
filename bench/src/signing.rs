//! Signing without the agent: the HSM ceiling (raw `C_Sign` through
//! cryptoki, one session per thread) and the in-process baseline (the key in
//! memory, as an app holding the PKCS#12 file signs). Both build the full
//! token, JSON and base64 included, so they compare with the agent's work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use access_token_agent::hsm::key_pairs::SigningKey;
use access_token_agent::hsm::{sign, Hsm};
use access_token_agent::key_type::Alg;
use access_token_agent::token::{self, Lifetime};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};

/// Runs `work` on `threads` threads for `duration`; tokens per second.
fn on_threads<F>(threads: usize, duration: Duration, work: F) -> f64
where
    F: Fn(&AtomicBool, &AtomicU64) + Send + Sync + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let work = Arc::new(work);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, count, work) = (stop.clone(), count.clone(), work.clone());
            std::thread::spawn(move || work(&stop, &count))
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.join().expect("a signing thread");
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Full tokens per second through the HSM with one session per thread.
pub fn hsm_ceiling(hsm: Arc<Hsm>, key: SigningKey, threads: usize, duration: Duration) -> f64 {
    on_threads(threads, duration, move |stop, count| {
        let session = hsm.open_session().expect("a signing session");
        let lifetime = Lifetime::default();
        while !stop.load(Ordering::Relaxed) {
            sign::sign_token(&session, &key, "bench", now(), &lifetime, String::new())
                .expect("C_Sign");
            count.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Full tokens per second with the private key in process memory.
pub fn in_process(alg: Alg, threads: usize, duration: Duration) -> f64 {
    let key = match alg {
        Alg::Rs256 => PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("RSA key")),
        Alg::Es256 => {
            let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                .expect("P-256");
            PKey::from_ec_key(openssl::ec::EcKey::generate(&group).expect("EC key"))
        }
    }
    .expect("a private key");
    let id = token::key_id(alg, &[7u8; 20]);
    on_threads(threads, duration, move |stop, count| {
        let lifetime = Lifetime::default();
        while !stop.load(Ordering::Relaxed) {
            let unsigned = token::build(&id, "ttd", "bench", now(), &lifetime, String::new());
            let signature = sign_in_memory(&key, alg, unsigned.signing_input.as_bytes());
            std::hint::black_box(unsigned.finish(&signature));
            count.fetch_add(1, Ordering::Relaxed);
        }
    })
}

fn sign_in_memory(key: &PKey<Private>, alg: Alg, input: &[u8]) -> Vec<u8> {
    match alg {
        Alg::Rs256 => {
            let mut signer =
                openssl::sign::Signer::new(MessageDigest::sha256(), key).expect("a signer");
            signer.sign_oneshot_to_vec(input).expect("an RSA signature")
        }
        Alg::Es256 => {
            let digest = openssl::sha::sha256(input);
            let signature =
                EcdsaSig::sign(&digest, &key.ec_key().expect("an EC key")).expect("ECDSA");
            let mut raw = signature.r().to_vec_padded(32).expect("r");
            raw.extend(signature.s().to_vec_padded(32).expect("s"));
            raw
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
