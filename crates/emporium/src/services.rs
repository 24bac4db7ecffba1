//! The one table of Emporium's services: each one's name, default port, the services it calls,
//! the tables it owns, the consumer groups it runs, the ports (storage, cache, blobs) it uses, where its API is described,
//! its own settings and the function that wires it. Everything else that knows the services
//! reads this table: `up` and `serve`, the ports and peer URLs on the command line and in
//! `--help` ([`Peers`]), the start order (from the calls), the fault switches' dependencies,
//! `init`, the banner, the whole-platform tests and the deployment tests.
//!
//! Adding a service is one row here and one wiring function in `run.rs`
//! (`docs/ARCHITECTURE.md`, "Adding a service", lists the rest).

use std::collections::BTreeMap;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use emporium_ports::events::GroupDef;
use emporium_ports::faulty::Port;
use emporium_ports::storage::TableDef;

/// What the table says of one service.
#[derive(Debug)]
pub struct Spec {
    /// Its name: in `emporium serve <name>`, flags (`--<name>-port`), variables
    /// (`EMPORIUM_<NAME>_PORT`), logs, metrics, Kubernetes objects and fault switches.
    pub name: &'static str,
    /// The port it listens on unless told otherwise.
    pub port: u16,
    /// Heading of its settings in `--help`.
    pub heading: &'static str,
    /// The services it calls: they start before it, and its peer URLs are theirs.
    pub calls: &'static [Service],
    /// The tables it owns, for opening its store and for `init`.
    pub tables: &'static [TableDef],
    /// The consumer groups it runs (docs/EVENTS.md): `init` creates their queues, and every
    /// publish fans out to them.
    pub groups: &'static [GroupDef],
    /// The ports it is wired with, the only ones its fault switches can take away.
    pub ports: &'static [Port],
    /// Path of its OpenAPI document.
    pub api_doc: &'static str,
}

/// Declares the services: the enum naming them, their [`Spec`]s, the settings of each and the
/// dispatch to each one's wiring, from one list, so none of these can forget a service.
macro_rules! services {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident {
            name: $name:literal,
            port: $port:literal,
            heading: $heading:literal,
            calls: [$($callee:ident),*],
            tables: $tables:expr,
            groups: $groups:expr,
            ports: [$($uses:ident),*],
            api_doc: $api_doc:literal,
            settings: $field:ident: $settings:ty,
            wiring: $wiring:ident,
        }
    ),+ $(,)?) => {
        /// A service this binary can run.
        #[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Service {
            $(
                $(#[doc = $doc])*
                #[value(name = $name)]
                $variant,
            )+
        }

        const SPECS: &[Spec] = &[$(
            Spec {
                name: $name,
                port: $port,
                heading: $heading,
                calls: &[$(Service::$callee),*],
                tables: $tables,
                groups: $groups,
                ports: &[$(Port::$uses),*],
                api_doc: $api_doc,
            },
        )+];

        impl Service {
            /// Every service, in the table's order (which is not the start order: see
            /// [`start_order`]).
            pub const ALL: &'static [Service] = &[$(Service::$variant),+];
        }

        /// Each service's own settings (its port and peer URLs are in [`Peers`]).
        #[derive(Args, Debug, Clone)]
        pub struct ServiceSettings {
            $(
                #[command(flatten)]
                pub $field: $settings,
            )+
        }

        impl crate::run::Starter<'_> {
            /// Wires `service` and starts serving it.
            pub(crate) async fn wire(&mut self, service: Service) -> anyhow::Result<()> {
                match service {
                    $(Service::$variant => self.$wiring().await,)+
                }
            }
        }
    };
}

services! {
    /// Products, categories and their images.
    Catalog {
        name: "catalog",
        port: 8081,
        heading: "Catalog service",
        calls: [],
        tables: emporium_catalog::TABLES,
        groups: &[],
        ports: [Storage, Cache, Blobs, Events],
        api_doc: "/openapi.json",
        settings: catalog: emporium_catalog::CatalogSettings,
        wiring: catalog,
    },
    /// Stock levels and the reservations that hold stock for checkouts.
    Inventory {
        name: "inventory",
        port: 8082,
        heading: "Inventory service",
        calls: [],
        tables: emporium_inventory::TABLES,
        groups: emporium_inventory::GROUPS,
        ports: [Storage, Events],
        api_doc: "/openapi.json",
        settings: inventory: emporium_inventory::InventorySettings,
        wiring: inventory,
    },
    /// Shoppers' carts.
    Cart {
        name: "cart",
        port: 8083,
        heading: "Cart service",
        calls: [Catalog, Inventory],
        tables: emporium_cart::TABLES,
        groups: emporium_cart::GROUPS,
        ports: [Storage, Cache, Events],
        api_doc: "/openapi.json",
        settings: cart: emporium_cart::CartSettings,
        wiring: cart,
    },
    /// Checkout (the order saga) and customers' orders.
    Order {
        name: "order",
        port: 8084,
        heading: "Order service",
        calls: [Catalog, Inventory, Cart],
        tables: emporium_order::TABLES,
        groups: &[],
        ports: [Storage, Events],
        api_doc: "/openapi.json",
        settings: order: emporium_order::OrderSettings,
        wiring: order,
    },
    /// The shop's pages and its public API. It owns no data: sessions live in cookies.
    Storefront {
        name: "storefront",
        port: 8080,
        heading: "Storefront",
        calls: [Catalog, Inventory, Cart, Order],
        tables: &[],
        groups: &[],
        ports: [Blobs],
        api_doc: "/api/v1/openapi.json",
        settings: storefront: emporium_storefront::StorefrontSettings,
        wiring: storefront,
    },
}

impl Service {
    pub fn spec(self) -> &'static Spec {
        &SPECS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The tables the service owns.
    pub fn tables(self) -> &'static [TableDef] {
        self.spec().tables
    }

    /// The consumer groups it runs.
    pub fn groups(self) -> &'static [GroupDef] {
        self.spec().groups
    }

    /// Every consumer group of every service: what the bus fans out to.
    pub fn all_groups() -> Vec<GroupDef> {
        Self::ALL
            .iter()
            .flat_map(|service| service.groups().iter().copied())
            .collect()
    }

    /// The services it calls.
    pub fn calls(self) -> &'static [Service] {
        self.spec().calls
    }

    /// The service called `name`, if there is one.
    pub fn named(name: &str) -> Option<Service> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }

    /// Whether some service calls this one (and so it has a peer URL setting).
    pub fn is_called(self) -> bool {
        Self::ALL
            .iter()
            .any(|caller| caller.calls().contains(&self))
    }
}

/// `services` in an order where each starts after every service it calls (and, among those
/// free to start, in the table's order), so a service finds its peers listening. The table's
/// test proves it has no cycle; a cycle would leave its members out, and the caller's check
/// that every service was started names them.
pub fn start_order(services: &[Service]) -> Vec<Service> {
    let mut order: Vec<Service> = Vec::with_capacity(services.len());
    let mut left: Vec<Service> = Service::ALL
        .iter()
        .copied()
        .filter(|s| services.contains(s))
        .collect();
    while let Some(at) = left.iter().position(|service| {
        service
            .calls()
            .iter()
            .all(|callee| order.contains(callee) || !services.contains(callee))
    }) {
        order.push(left.remove(at));
    }
    order
}

/// Every service's port and, for each service others call, where it is reached: flags and
/// variables made from the table (`--catalog-port`, `EMPORIUM_CATALOG_PORT`, `--catalog-url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers {
    ports: BTreeMap<Service, u16>,
    urls: BTreeMap<Service, String>,
}

impl Peers {
    /// The port `service` listens on.
    pub fn port(&self, service: Service) -> u16 {
        self.ports
            .get(&service)
            .copied()
            .unwrap_or(service.spec().port)
    }

    /// The URL configured for `service`, if one was.
    pub fn url(&self, service: Service) -> Option<&String> {
        self.urls.get(&service)
    }

    fn port_id(service: Service) -> String {
        format!("{}-port", service.name())
    }

    fn url_id(service: Service) -> String {
        format!("{}-url", service.name())
    }

    fn variable(service: Service, setting: &str) -> String {
        format!(
            "EMPORIUM_{}_{setting}",
            service.name().to_ascii_uppercase().replace('-', "_")
        )
    }
}

impl Args for Peers {
    fn augment_args(mut command: Command) -> Command {
        for &service in Service::ALL {
            let spec = service.spec();
            command = command.arg(
                Arg::new(Self::port_id(service))
                    .long(Self::port_id(service))
                    .env(Self::variable(service, "PORT"))
                    .value_name("PORT")
                    .value_parser(clap::value_parser!(u16))
                    .default_value(spec.port.to_string())
                    .help(format!("Port the {} service listens on", spec.name))
                    .help_heading(spec.heading),
            );
            if service.is_called() {
                command = command.arg(
                    Arg::new(Self::url_id(service))
                        .long(Self::url_id(service))
                        .env(Self::variable(service, "URL"))
                        .value_name("URL")
                        .help(format!(
                            "Base URL of the {name} service. [default: http://127.0.0.1:<{name} port>]",
                            name = spec.name
                        ))
                        .help_heading("Service addresses"),
                );
            }
        }
        command
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl FromArgMatches for Peers {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut peers = Self {
            ports: BTreeMap::new(),
            urls: BTreeMap::new(),
        };
        peers.update_from_arg_matches(matches)?;
        Ok(peers)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for &service in Service::ALL {
            if let Some(port) = matches.get_one::<u16>(&Self::port_id(service)) {
                self.ports.insert(service, *port);
            }
            if service.is_called()
                && let Some(url) = matches.get_one::<String>(&Self::url_id(service))
            {
                self.urls.insert(service, url.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_starts_after_the_services_it_calls() {
        let order = start_order(Service::ALL);
        assert_eq!(order.len(), Service::ALL.len(), "the calls have no cycle");
        for (at, service) in order.iter().enumerate() {
            for callee in service.calls() {
                let callee_at = order.iter().position(|s| s == callee).expect("started");
                assert!(
                    callee_at < at,
                    "{} before {}",
                    callee.name(),
                    service.name()
                );
            }
        }
        // A service started alone, or with only some of its callees, still starts.
        assert_eq!(start_order(&[Service::Order]), vec![Service::Order]);
        assert_eq!(
            start_order(&[Service::Storefront, Service::Catalog]),
            vec![Service::Catalog, Service::Storefront]
        );
    }

    #[test]
    fn names_ports_and_calls_are_each_service_s_own() {
        let mut names: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
        let mut ports: Vec<u16> = Service::ALL.iter().map(|s| s.spec().port).collect();
        names.sort_unstable();
        names.dedup();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(names.len(), Service::ALL.len(), "names are unique");
        assert_eq!(ports.len(), Service::ALL.len(), "ports are unique");
        for service in Service::ALL {
            assert_eq!(Service::named(service.name()), Some(*service));
            assert!(
                !service.calls().contains(service),
                "no service calls itself"
            );
            assert!(
                service.name().bytes().all(|b| b.is_ascii_lowercase()),
                "{} is a DNS label and a flag prefix",
                service.name()
            );
        }
    }
}
