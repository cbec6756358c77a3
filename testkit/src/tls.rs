//! A throwaway certificate authority for tests that speak TLS: the gateway's TLS listener, a
//! local OpenID provider served over HTTPS, nginx terminating TLS beside the gateway. Each test
//! makes its own CA, so no test trusts anything outside itself.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA whose certificate a test client trusts (`ca_pem`, or the file [`TestCa::write_ca`]
/// writes).
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

/// A server certificate (PEM chain: the leaf) and its private key (PKCS#8 PEM).
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    pub fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for the given DNS names and IP addresses (`"localhost"`, `"127.0.0.1"`),
    /// with a fresh key each call (a renewal in a test is a second call).
    pub fn issue(&self, names: &[&str]) -> ServerCert {
        self.issue_with(names, |_| {})
    }

    /// A certificate that expired on 2020-02-01 (valid for January 2020 only).
    pub fn issue_expired(&self, names: &[&str]) -> ServerCert {
        self.issue_with(names, |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 2, 1);
        })
    }

    /// A certificate valid from 2100 on (a pre-staged renewal).
    pub fn issue_not_yet_valid(&self, names: &[&str]) -> ServerCert {
        self.issue_with(names, |params| {
            params.not_before = rcgen::date_time_ymd(2100, 1, 1);
            params.not_after = rcgen::date_time_ymd(2101, 1, 1);
        })
    }

    fn issue_with(
        &self,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> ServerCert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server certificate parameters");
        adjust(&mut params);
        params
            .distinguished_name
            .push(DnType::CommonName, "stockgate test server");
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("server certificate");
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the CA certificate to `dir/ca.pem` and returns its path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.ca_pem()).expect("write ca.pem");
        path
    }
}

impl ServerCert {
    /// Writes `dir/{name}.crt` and `dir/{name}.key` and returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_are_pem_and_differ_per_issue() {
        let ca = TestCa::new("testkit CA");
        let first = ca.issue(&["localhost", "127.0.0.1"]);
        let second = ca.issue(&["localhost"]);
        assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(first.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(first.key_pem.contains("PRIVATE KEY"));
        assert_ne!(first.key_pem, second.key_pem);
    }
}
