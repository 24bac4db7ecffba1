//! Browsing: the home page, category listings, search results and product pages.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use emporium_api::ProblemCode;
use emporium_api::catalog::{
    Category, MAX_QUERY_CHARS, MAX_QUERY_WORDS, Product, ProductQuery, ProductSort,
};
use emporium_platform::id;
use serde::Deserialize;

use super::{Layout, Notice, frame, render};
use crate::assets;
use crate::error::PageError;
use crate::session::Visitor;
use crate::shop::Shop;
use crate::view::{self, Availability, ProductCard};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(home))
        .route("/c/{slug}", web::get().to(category))
        .route("/search", web::get().to(search))
        .route("/p/{id}", web::get().to(product));
}

/// Products on the home page.
const FEATURED: u32 = 8;
/// Other products of the category shown under a product.
const RELATED: usize = 4;

#[derive(Debug, Clone)]
struct CategoryTile {
    url: String,
    name: String,
    description: String,
    product_count: u64,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    layout: Layout,
    categories: Vec<CategoryTile>,
    featured: Vec<ProductCard>,
}

async fn home(shop: web::Data<Shop>, visitor: Visitor) -> Result<HttpResponse, PageError> {
    let query = ProductQuery {
        sort: Some(ProductSort::Newest),
        limit: Some(FEATURED),
        ..ProductQuery::default()
    };
    let ((categories, cart_count), featured) =
        futures::join!(frame(&shop, &visitor), shop.products(&query));
    let featured = featured?;
    let stock = shop.stock_of_products(&featured.items).await;
    let page = HomePage {
        layout: Layout::new("Emporium", &categories, cart_count, ""),
        categories: categories
            .iter()
            .map(|c| CategoryTile {
                url: view::category_url(&c.slug),
                name: c.name.clone(),
                description: c.description.clone(),
                product_count: c.product_count,
            })
            .collect(),
        featured: featured
            .items
            .iter()
            .map(|p| ProductCard::new(p, stock.get(&p.sku), shop.max_quantity))
            .collect(),
    };
    Ok(render(StatusCode::OK, &page))
}

#[derive(Debug, Deserialize)]
struct ListingQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Debug, Clone)]
struct SortOption {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "listing.html")]
struct ListingPage {
    layout: Layout,
    heading: String,
    intro: String,
    /// Where the listing lives, for the sort form and page links.
    path: String,
    /// Hidden `q` of the sort form, for search results.
    q: String,
    sorts: Vec<SortOption>,
    products: Vec<ProductCard>,
    next_url: Option<String>,
    first_url: Option<String>,
    empty_message: String,
}

fn parse_sort(text: &str) -> ProductSort {
    match text {
        "price_asc" => ProductSort::PriceAsc,
        "price_desc" => ProductSort::PriceDesc,
        "newest" => ProductSort::Newest,
        _ => ProductSort::Name,
    }
}

fn sort_options(current: ProductSort) -> Vec<SortOption> {
    [
        (ProductSort::Name, "Name"),
        (ProductSort::PriceAsc, "Price: low to high"),
        (ProductSort::PriceDesc, "Price: high to low"),
        (ProductSort::Newest, "Newest"),
    ]
    .into_iter()
    .map(|(sort, label)| SortOption {
        value: sort.as_str(),
        label,
        selected: sort == current,
    })
    .collect()
}

/// A link to a listing page; parameters are form-encoded.
fn listing_url(path: &str, q: &str, sort: ProductSort, cursor: Option<&str>) -> String {
    let mut params: Vec<(&str, &str)> = Vec::new();
    if !q.is_empty() {
        params.push(("q", q));
    }
    if sort != ProductSort::Name {
        params.push(("sort", sort.as_str()));
    }
    if let Some(cursor) = cursor {
        params.push(("cursor", cursor));
    }
    match serde_urlencoded::to_string(&params) {
        Ok(query) if !query.is_empty() => format!("{path}?{query}"),
        _ => path.to_owned(),
    }
}

struct Listing<'a> {
    title: String,
    heading: String,
    intro: String,
    path: String,
    q: &'a str,
    current_category: &'a str,
    empty_message: &'a str,
}

async fn listing(
    shop: &Shop,
    categories: &[Category],
    cart_count: i64,
    mut query: ProductQuery,
    params: &ListingQuery,
    listing: Listing<'_>,
) -> Result<HttpResponse, PageError> {
    let sort = parse_sort(&params.sort);
    query.sort = Some(sort);
    query.limit = Some(shop.page_size);
    query.cursor = params.cursor.clone().filter(|c| !c.is_empty());
    let page = match shop.products(&query).await {
        Ok(page) => page,
        // A cursor from another listing or an old link: start the listing again.
        Err(error) if error.is(&ProblemCode::InvalidCursor) => {
            return Ok(super::see_other(&listing_url(
                &listing.path,
                listing.q,
                sort,
                None,
            )));
        }
        Err(error) => return Err(error.into()),
    };
    let stock = shop.stock_of_products(&page.items).await;
    let body = ListingPage {
        layout: Layout::new(
            &listing.title,
            categories,
            cart_count,
            listing.current_category,
        )
        .with_query(listing.q),
        heading: listing.heading,
        intro: listing.intro,
        q: listing.q.to_owned(),
        sorts: sort_options(sort),
        products: page
            .items
            .iter()
            .map(|p| ProductCard::new(p, stock.get(&p.sku), shop.max_quantity))
            .collect(),
        next_url: page
            .next_cursor
            .as_deref()
            .map(|c| listing_url(&listing.path, listing.q, sort, Some(c))),
        first_url: query
            .cursor
            .as_ref()
            .map(|_| listing_url(&listing.path, listing.q, sort, None)),
        empty_message: listing.empty_message.to_owned(),
        path: listing.path,
    };
    Ok(render(StatusCode::OK, &body))
}

async fn category(
    shop: web::Data<Shop>,
    visitor: Visitor,
    slug: web::Path<String>,
    params: web::Query<ListingQuery>,
) -> Result<HttpResponse, PageError> {
    let (categories, cart_count) = frame(&shop, &visitor).await;
    let Some(current) = categories.iter().find(|c| c.slug == *slug) else {
        if categories.is_empty() {
            // The catalog did not answer: say so rather than claim the category is missing.
            shop.catalog.categories().await?;
        }
        return Err(PageError::NotFound);
    };
    let query = ProductQuery {
        category: Some(current.slug.clone()),
        ..ProductQuery::default()
    };
    let listing_page = Listing {
        title: format!("{} · Emporium", current.name),
        heading: current.name.clone(),
        intro: current.description.clone(),
        path: view::category_url(&current.slug),
        q: "",
        current_category: &current.slug,
        empty_message: "There is nothing in this category yet.",
    };
    listing(&shop, &categories, cart_count, query, &params, listing_page).await
}

async fn search(
    shop: web::Data<Shop>,
    visitor: Visitor,
    params: web::Query<ListingQuery>,
) -> Result<HttpResponse, PageError> {
    let (categories, cart_count) = frame(&shop, &visitor).await;
    let (q, shortened) = search_words(&params.q);
    let (heading, intro) = if q.is_empty() {
        ("All products".to_owned(), String::new())
    } else if shortened {
        (
            format!("Results for “{q}”"),
            format!("Only the first {MAX_QUERY_WORDS} words of your search were used."),
        )
    } else {
        (format!("Results for “{q}”"), String::new())
    };
    let query = ProductQuery {
        q: Some(q.clone()).filter(|q| !q.is_empty()),
        ..ProductQuery::default()
    };
    let listing_page = Listing {
        title: format!("{heading} · Emporium"),
        heading,
        intro,
        path: "/search".to_owned(),
        q: &q,
        current_category: "",
        empty_message: "Nothing matched your search. Try fewer or different words.",
    };
    listing(&shop, &categories, cart_count, query, &params, listing_page).await
}

/// What a shopper typed, made into a search the catalog takes: control characters as spaces,
/// words once each, at most the catalog's words and characters; and whether anything was left
/// out. A long search then shows results for its first words rather than an error page.
fn search_words(typed: &str) -> (String, bool) {
    let cleaned: String = typed
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut words: Vec<&str> = Vec::new();
    let mut shortened = false;
    let mut length = 0;
    for word in cleaned.split_whitespace() {
        if words
            .iter()
            .any(|seen| seen.to_lowercase() == word.to_lowercase())
        {
            continue;
        }
        let added = word.chars().count() + usize::from(!words.is_empty());
        if words.len() == MAX_QUERY_WORDS || length + added > MAX_QUERY_CHARS {
            shortened = true;
            break;
        }
        length += added;
        words.push(word);
    }
    if words.is_empty() && shortened {
        // One word longer than a whole search: its beginning.
        let first: String = cleaned
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .chars()
            .take(MAX_QUERY_CHARS)
            .collect();
        return (first, true);
    }
    (words.join(" "), shortened)
}

#[derive(Debug, Clone)]
struct Fact {
    name: String,
    value: String,
}

#[derive(Template)]
#[template(path = "product.html")]
pub struct ProductPage {
    layout: Layout,
    csrf: String,
    id: String,
    name: String,
    sku: String,
    description: String,
    price: String,
    images: Vec<String>,
    category_name: String,
    category_url: String,
    facts: Vec<Fact>,
    availability: Availability,
    related: Vec<ProductCard>,
}

async fn product(
    shop: web::Data<Shop>,
    visitor: Visitor,
    id: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    product_page(&shop, &visitor, &id, None, StatusCode::OK).await
}

/// The product page, also shown again (with `notice`) when adding it to the cart failed.
pub async fn product_page(
    shop: &Shop,
    visitor: &Visitor,
    id: &str,
    notice: Option<Notice>,
    status: StatusCode,
) -> Result<HttpResponse, PageError> {
    if !id::is_valid(id) {
        return Err(PageError::NotFound);
    }
    let ((categories, cart_count), product) =
        futures::join!(frame(shop, visitor), shop.product(id));
    let product = product?;
    let related_query = ProductQuery {
        category: Some(product.category.clone()),
        limit: Some(RELATED as u32 + 1),
        ..ProductQuery::default()
    };
    let related_page = shop.products(&related_query).await.ok();
    let related: Vec<&Product> = related_page
        .iter()
        .flat_map(|page| page.items.iter())
        .filter(|p| p.id != product.id)
        .take(RELATED)
        .collect();
    // One stock read for the product and the related ones: a call fewer per page.
    let skus: Vec<&str> = related
        .iter()
        .copied()
        .chain(std::iter::once(&*product))
        .map(|p| p.sku.as_str())
        .collect();
    let stock = shop.stock_of(&skus).await;
    let category = categories.iter().find(|c| c.slug == product.category);
    let page = ProductPage {
        layout: Layout::new(
            &format!("{} · Emporium", product.name),
            &categories,
            cart_count,
            &product.category,
        )
        .with_notice(notice),
        csrf: visitor.csrf(),
        id: product.id.clone(),
        name: product.name.clone(),
        sku: product.sku.clone(),
        description: product.description.clone(),
        price: view::price(&product.price),
        images: product.images.iter().map(|k| assets::url(k)).collect(),
        category_name: category.map_or_else(|| product.category.clone(), |c| c.name.clone()),
        category_url: view::category_url(&product.category),
        facts: product
            .attributes
            .iter()
            .map(|(name, value)| Fact {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        availability: Availability::of(stock.get(&product.sku), shop.max_quantity),
        related: related
            .iter()
            .map(|p| ProductCard::new(p, stock.get(&p.sku), shop.max_quantity))
            .collect(),
    };
    Ok(render(status, &page))
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_searches_keep_their_first_words_within_the_catalogs_limits() {
        use super::search_words;
        assert_eq!(
            search_words("  cast  iron\tskillet "),
            ("cast iron skillet".into(), false)
        );
        let nine = "one two three four five six seven eight nine";
        assert_eq!(
            search_words(nine),
            ("one two three four five six seven eight".into(), true)
        );
        assert_eq!(search_words("tea Tea TEA cup"), ("tea cup".into(), false));
        assert_eq!(search_words("tea\u{1}cup"), ("tea cup".into(), false));
        let (long, shortened) = search_words(&"x".repeat(150));
        assert_eq!((long.len(), shortened), (100, true));
        let (words, shortened) = search_words(&format!("{} {}", "a".repeat(60), "b".repeat(60)));
        assert_eq!((words, shortened), ("a".repeat(60), true));
    }

    use super::*;

    #[test]
    fn listing_links_keep_the_query_and_sort() {
        assert_eq!(
            listing_url("/c/kitchen", "", ProductSort::Name, None),
            "/c/kitchen"
        );
        assert_eq!(
            listing_url("/search", "red mug&co", ProductSort::PriceAsc, Some("abc=")),
            "/search?q=red+mug%26co&sort=price_asc&cursor=abc%3D"
        );
        assert_eq!(parse_sort("junk"), ProductSort::Name);
    }
}
