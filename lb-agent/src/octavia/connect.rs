//! How the agent reaches Octavia: TLS, authentication and the endpoint,
//! turned into a [`Session`] (retried by the caller until it works).

use std::time::Duration;

use super::auth::{Auth, Session};
use super::http::{HttpClient, TlsOptions};
use super::keystone::{Credentials, Keystone};

pub struct Connect {
    pub tls: TlsOptions,
    /// Longest a single request may take.
    pub timeout: Duration,
    pub auth: AuthSettings,
    /// Octavia's URL; `None`: the `load-balancer` endpoint of Keystone's
    /// catalog.
    pub octavia_url: Option<String>,
    /// The catalog interface (`public`, `internal`, `admin`).
    pub interface: String,
    pub region: Option<String>,
}

pub enum AuthSettings {
    /// Octavia's `auth_strategy = noauth`; the project goes in
    /// `X-Project-Id`.
    NoAuth {
        project_id: Option<String>,
    },
    Keystone(Credentials),
}

impl Connect {
    pub async fn session(&self) -> anyhow::Result<Session> {
        let http = HttpClient::new(&self.tls, self.timeout)?;
        let auth = match &self.auth {
            AuthSettings::NoAuth { project_id } => Auth::NoAuth {
                project_id: project_id.clone(),
            },
            AuthSettings::Keystone(credentials) => {
                Auth::Keystone(Keystone::new(http.clone(), credentials.clone()))
            }
        };
        Session::connect(
            http,
            auth,
            self.octavia_url.clone(),
            &self.interface,
            self.region.as_deref(),
        )
        .await
    }
}
