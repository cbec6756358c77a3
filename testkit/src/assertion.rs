//! Requests sent to settlement as a gateway sends them: signed with that gateway's assertion
//! key for an identity (a buyer, an operator, or nobody for the gateway's own reads), by the
//! gateway's own signing code ([`gateway::service_auth::sign_request`]).

use std::future::Future;

use reservation_core::assertion::{AssertionSigner, Identity};

/// A buyer as the gateway asserts them.
pub fn buyer(sub: &str) -> Identity {
    Identity {
        sub: Some(sub.to_owned()),
        roles: vec![],
    }
}

/// An operator as the gateway asserts them.
pub fn ops(sub: &str) -> Identity {
    Identity {
        sub: Some(sub.to_owned()),
        roles: vec!["ops".to_owned()],
    }
}

/// The gateway's own requests (catalog reads): no buyer.
pub fn nobody() -> Identity {
    Identity::default()
}

/// Sends a request as the gateway does: with an assertion for `who` over its method, path
/// with query, `If-Match` and body, signed by `gateway`.
pub trait AsGateway {
    fn send_as(
        self,
        gateway: &AssertionSigner,
        who: Identity,
    ) -> impl Future<Output = anyhow::Result<reqwest::Response>>;
}

impl AsGateway for reqwest::RequestBuilder {
    async fn send_as(
        self,
        gateway: &AssertionSigner,
        who: Identity,
    ) -> anyhow::Result<reqwest::Response> {
        let (client, request) = self.build_split();
        let mut request = request?;
        gateway::service_auth::sign_request(gateway, &mut request, &who)
            .map_err(anyhow::Error::msg)?;
        Ok(client.execute(request).await?)
    }
}
