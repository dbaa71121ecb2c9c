//! The server's authentication endpoints: who am I, tokens, joining a node, and a node's
//! agent credentials.

use kohakuriver_api::auth::{
    CreatedToken, JoinRequest, NodeCredentials, TokenInfo, TokenList, TokenRequest, WhoAmI,
};
use kohakuriver_api::{Node, Resource};

use crate::client::Client;
use crate::error::Error;

impl Client {
    /// `GET /whoami`: the identity of this client's credential.
    pub async fn whoami(&self) -> Result<WhoAmI, Error> {
        let url = self.url(&["whoami"]);
        self.request_json(self.request(reqwest::Method::GET, url))
            .await
    }

    /// `POST /tokens` (admin): makes a token; its secret is in the answer, and nowhere else.
    pub async fn create_token(&self, request: &TokenRequest) -> Result<CreatedToken, Error> {
        let url = self.url(&["tokens"]);
        self.request_json(self.request(reqwest::Method::POST, url).json(request))
            .await
    }

    /// `GET /tokens` (admin): every token, never a secret.
    pub async fn list_tokens(&self) -> Result<TokenList, Error> {
        let url = self.url(&["tokens"]);
        self.request_json(self.request(reqwest::Method::GET, url))
            .await
    }

    /// `DELETE /tokens/{id or name}` (admin): the token is refused from its next request on.
    pub async fn revoke_token(&self, id_or_name: &str) -> Result<TokenInfo, Error> {
        let url = self.url(&["tokens", id_or_name]);
        self.request_json(self.request(reqwest::Method::DELETE, url))
            .await
    }

    /// `POST /join` with a join credential: a node credential bound to `node`.
    pub async fn join(&self, node: &str) -> Result<CreatedToken, Error> {
        let url = self.url(&["join"]);
        let body = JoinRequest {
            node: node.to_string(),
        };
        self.request_json(self.request(reqwest::Method::POST, url).json(&body))
            .await
    }

    /// `GET /nodes/{name}/credentials` (that node only): the secret the server presents to
    /// the node's agent.
    pub async fn node_credentials(&self, node: &str) -> Result<NodeCredentials, Error> {
        let url = self.url(&[Node::PLURAL, node, "credentials"]);
        self.request_json(self.request(reqwest::Method::GET, url))
            .await
    }
}
