//! The demo shop: categories, products and their generated images, loaded through the same
//! service code and ports as any other write, so the demo exercises the real paths. Nothing is
//! downloaded: each product image is an SVG drawn from the product's category and name.
//!
//! Seeding is idempotent. Products get ids derived from their SKU, existing categories and SKUs
//! are left alone, and images are stored under keys derived from their bytes, so running it
//! again changes nothing.

mod data;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context;
use bytes::Bytes;
use emporium_api::Money;
use emporium_api::catalog::{NewCategory, NewProduct};
use emporium_catalog::Catalog;
use emporium_catalog::error::CatalogError;
use emporium_ports::blob::{BlobKey, Blobs};
use futures::StreamExt;
use sha2::{Digest, Sha256};

pub use data::{CATEGORIES, DemoCategory, DemoProduct, PRODUCTS};

/// What a seeding run created (zero everywhere when the data was already there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub categories: usize,
    pub products: usize,
    /// SKUs given stock.
    pub stock: usize,
}

/// Told of every demo record as it is loaded (categories, products, stock), for progress bars.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

/// Reports nothing.
pub fn quiet(_: &str) {}

/// How many records seeding visits: what a progress bar counts to.
pub fn seed_steps() -> u64 {
    (CATEGORIES.len() + 2 * PRODUCTS.len()) as u64
}

/// Loads the demo categories, products and images; safe to run any number of times.
pub async fn seed_catalog(
    catalog: &Catalog,
    blobs: &dyn Blobs,
    progress: Progress<'_>,
) -> anyhow::Result<SeedReport> {
    let mut report = SeedReport::default();
    for (position, category) in CATEGORIES.iter().enumerate() {
        let input = NewCategory {
            slug: category.slug.to_owned(),
            name: category.name.to_owned(),
            description: category.description.to_owned(),
            position: i32::try_from(position).unwrap_or(i32::MAX),
        };
        match catalog.create_category(&input).await {
            Ok(_) => report.categories += 1,
            Err(CatalogError::CategoryExists(_)) => {}
            Err(error) => {
                return Err(error).with_context(|| format!("creating category {}", category.slug));
            }
        }
        progress(category.slug);
    }
    let currency = catalog.currency().to_owned();
    // Several at a time: the embedded store commits concurrent writes together.
    let created = futures::stream::iter(PRODUCTS)
        .map(|product| async {
            let created = seed_product(catalog, blobs, product, &currency).await;
            progress(product.sku);
            created
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for outcome in created {
        if outcome? {
            report.products += 1;
        }
    }
    Ok(report)
}

async fn seed_product(
    catalog: &Catalog,
    blobs: &dyn Blobs,
    product: &DemoProduct,
    currency: &str,
) -> anyhow::Result<bool> {
    let category = CATEGORIES
        .iter()
        .find(|c| c.slug == product.category)
        .with_context(|| format!("{} names an unknown category", product.sku))?;
    let svg = product_image(product, category);
    let key = image_key(&svg);
    let blob_key = BlobKey::parse(&key)?;
    if blobs.head(&blob_key).await?.is_none() {
        blobs
            .put(&blob_key, Bytes::from(svg), "image/svg+xml")
            .await
            .with_context(|| format!("storing the image of {}", product.sku))?;
    }
    let input = NewProduct {
        sku: product.sku.to_owned(),
        name: product.name.to_owned(),
        description: product.description.to_owned(),
        category: product.category.to_owned(),
        price: Money::new(product.price, currency),
        images: vec![key],
        attributes: product
            .attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    };
    let id = emporium_platform::id::derived_id(&format!("demo-product:{}", product.sku));
    match catalog.create_product_with_id(id, &input).await {
        Ok(_) => Ok(true),
        Err(CatalogError::SkuTaken(_)) => Ok(false),
        Err(error) => Err(error).with_context(|| format!("creating product {}", product.sku)),
    }
}

/// The demo's stock of a SKU: most products are well stocked, a few run low and a few are sold
/// out, so the storefront has every state to show.
pub fn demo_stock(sku: &str) -> i64 {
    match sku {
        "OFF-001" | "AUD-003" | "APP-003" | "OUT-002" => 0,
        "KIT-009" | "BKS-004" => 1,
        "OUT-001" | "AUD-001" | "APP-004" => 3,
        other => {
            let digest = Sha256::digest(other.as_bytes());
            20 + i64::from(digest[0] % 81)
        }
    }
}

/// Gives every demo SKU its stock, leaving SKUs that already have a stock record alone; returns
/// how many it created.
pub async fn seed_stock(
    inventory: &emporium_inventory::Inventory,
    progress: Progress<'_>,
) -> anyhow::Result<usize> {
    let mut created = 0;
    for product in PRODUCTS {
        if inventory
            .create_stock(product.sku, demo_stock(product.sku))
            .await
            .with_context(|| format!("stocking {}", product.sku))?
        {
            created += 1;
        }
        progress(product.sku);
    }
    Ok(created)
}

/// Content-addressed blob key of an image.
pub fn image_key(svg: &str) -> String {
    let digest = Sha256::digest(svg.as_bytes());
    format!("images/{}.svg", hex::encode(&digest[..16]))
}

fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            other => out.push(other),
        }
    }
    out
}

/// Breaks a name into at most two lines of about `width` characters.
fn wrap(name: &str, width: usize) -> Vec<String> {
    if name.chars().count() <= width {
        return vec![name.to_owned()];
    }
    let mut first = String::new();
    let mut words = name.split_whitespace().peekable();
    while let Some(word) = words.peek() {
        if !first.is_empty() && first.chars().count() + 1 + word.chars().count() > width {
            break;
        }
        if !first.is_empty() {
            first.push(' ');
        }
        first.push_str(word);
        words.next();
    }
    let rest: Vec<&str> = words.collect();
    if rest.is_empty() {
        vec![first]
    } else {
        vec![first, rest.join(" ")]
    }
}

/// The picture drawn in the middle of a category's product images.
fn category_icon(slug: &str) -> &'static str {
    match slug {
        "kitchen" => {
            r##"<rect x="270" y="230" width="210" height="250" rx="34"/><path d="M480 290h36a56 56 0 0 1 0 112h-36" fill="none" stroke="#fff" stroke-width="28"/><path d="M320 200c0-30 30-30 30-60M380 200c0-30 30-30 30-60" fill="none" stroke="#fff" stroke-width="14" stroke-linecap="round" opacity=".7"/>"##
        }
        "home-office" => {
            r##"<path d="M300 470h200v26H300z"/><path d="M395 470 365 330l85-80" fill="none" stroke="#fff" stroke-width="18" stroke-linecap="round" stroke-linejoin="round"/><path d="m420 215 120 45-45 85z"/><circle cx="470" cy="340" r="14" opacity=".7"/>"##
        }
        "audio" => {
            r##"<path d="M280 420v-60a120 120 0 0 1 240 0v60" fill="none" stroke="#fff" stroke-width="26"/><rect x="254" y="385" width="62" height="115" rx="22"/><rect x="484" y="385" width="62" height="115" rx="22"/>"##
        }
        "outdoors" => {
            r##"<path d="M210 480 345 255l85 140 55-75 105 160z"/><path d="m345 255 30 50h-60z" fill-opacity=".5"/><circle cx="545" cy="235" r="38"/>"##
        }
        "apparel" => {
            r##"<path d="M325 225 262 265l-35 85 62 22 12-32v152h198V340l12 32 62-22-35-85-63-40q-75 55-150 0z"/>"##
        }
        "books" => {
            r##"<rect x="265" y="425" width="270" height="52" rx="8"/><rect x="290" y="365" width="235" height="52" rx="8" opacity=".85"/><rect x="262" y="305" width="250" height="52" rx="8"/><rect x="300" y="245" width="205" height="52" rx="8" opacity=".85"/>"##
        }
        _ => r##"<circle cx="400" cy="360" r="120"/>"##,
    }
}

/// An 800×800 SVG for a product: the category's gradient and icon, a few soft circles placed by
/// the SKU so every product looks a little different, and the product's name.
pub fn product_image(product: &DemoProduct, category: &DemoCategory) -> String {
    let seed = Sha256::digest(product.sku.as_bytes());
    let (from, to) = category.colours;
    let name = escape_xml(product.name);
    let mut svg = String::with_capacity(2048);
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 800 800" width="800" height="800" role="img" aria-label="{name}"><defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1"><stop offset="0" stop-color="{from}"/><stop offset="1" stop-color="{to}"/></linearGradient></defs><rect width="800" height="800" fill="url(#g)"/>"##
    );
    for circle in 0..3 {
        let x = u32::from(seed[circle * 3]) * 800 / 255;
        let y = u32::from(seed[circle * 3 + 1]) * 800 / 255;
        let r = 60 + u32::from(seed[circle * 3 + 2]) % 180;
        let opacity = 0.06 + f64::from(seed[10 + circle] % 10) / 100.0;
        let _ = write!(
            svg,
            r##"<circle cx="{x}" cy="{y}" r="{r}" fill="#fff" fill-opacity="{opacity:.2}"/>"##
        );
    }
    let _ = write!(
        svg,
        r##"<g fill="#fff">{}</g>"##,
        category_icon(category.slug)
    );
    let lines = wrap(product.name, 24);
    let size = if lines.len() > 1 { 40 } else { 48 };
    let first_y = if lines.len() > 1 { 640 } else { 670 };
    for (index, line) in lines.iter().enumerate() {
        let y = first_y + index * 54;
        let _ = write!(
            svg,
            r##"<text x="400" y="{y}" font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif" font-size="{size}" font-weight="600" fill="#fff" text-anchor="middle">{}</text>"##,
            escape_xml(line)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_is_big_enough_and_consistent() {
        assert!(CATEGORIES.len() >= 6);
        assert!(PRODUCTS.len() >= 48);
        let mut skus = std::collections::HashSet::new();
        for product in PRODUCTS {
            assert!(skus.insert(product.sku), "{} twice", product.sku);
            assert!(
                CATEGORIES.iter().any(|c| c.slug == product.category),
                "{}",
                product.sku
            );
            assert!(product.price > 0);
        }
    }

    #[test]
    fn some_demo_products_are_low_or_out_of_stock() {
        let levels: Vec<i64> = PRODUCTS.iter().map(|p| demo_stock(p.sku)).collect();
        assert!(levels.iter().filter(|&&n| n == 0).count() >= 3);
        assert!(levels.iter().filter(|&&n| (1..=3).contains(&n)).count() >= 3);
        assert!(levels.iter().all(|&n| (0..=100).contains(&n)));
    }

    #[test]
    fn images_differ_per_product_and_escape_names() {
        let category = &CATEGORIES[0];
        let a = product_image(&PRODUCTS[0], category);
        let b = product_image(&PRODUCTS[1], category);
        assert_ne!(image_key(&a), image_key(&b));
        assert!(a.starts_with("<svg") && a.ends_with("</svg>"));
        let tricky = DemoProduct {
            sku: "X-1",
            category: "kitchen",
            name: "Salt & <Pepper>",
            price: 1,
            description: "",
            attributes: &[],
        };
        let svg = product_image(&tricky, category);
        assert!(svg.contains("Salt &amp; &lt;Pepper&gt;"));
        assert!(!svg.contains("<Pepper>"));
    }

    #[test]
    fn long_names_wrap_onto_two_lines() {
        assert_eq!(wrap("Apron", 24), ["Apron"]);
        assert_eq!(
            wrap("The Repair Manual for Almost Everything", 24),
            ["The Repair Manual for", "Almost Everything"]
        );
    }
}
