//! `#[leakscope_test::test]`: `#[tokio::test]` that fails on leaks.
//!
//! The expansion is deliberately thin: it turns the arguments into a
//! `leakscope_test::Spec` and hands the body, as a closure that makes a
//! fresh future per iteration, to `leakscope_test::run_test`. Everything
//! that can be ordinary code lives there, where it is type-checked and
//! tested like the rest.

use proc_macro::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{parse_macro_input, Expr, ItemFn, LitBool, LitInt, LitStr};

/// Runs an `async fn` test on its own runtime, as `#[tokio::test]` does,
/// and fails it when it leaves a task, an fd or heap behind.
///
/// Arguments: `flavor = "multi_thread" | "current_thread"`,
/// `worker_threads = N`, `start_paused = true` (as `#[tokio::test]`), and
/// `config = EXPR` for a `leakscope_test::Config` (ignores, warm-up,
/// settle, heap tolerance).
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as ItemFn);
    let mut flavor: Option<LitStr> = None;
    let mut workers: Option<LitInt> = None;
    let mut paused: Option<LitBool> = None;
    let mut config: Option<Expr> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("flavor") {
            flavor = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("worker_threads") {
            workers = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("start_paused") {
            paused = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("config") {
            config = Some(meta.value()?.parse()?);
        } else {
            return Err(meta.error(
                "unknown argument: expected flavor, worker_threads, start_paused or config",
            ));
        }
        Ok(())
    });
    parse_macro_input!(args with parser);
    if input.sig.asyncness.is_none() {
        return syn::Error::new(input.sig.fn_token.span(), "the test function must be async")
            .to_compile_error()
            .into();
    }
    let flavor = match flavor.as_ref().map(LitStr::value).as_deref() {
        None | Some("current_thread") => quote!(::leakscope_test::Flavor::CurrentThread),
        Some("multi_thread") => quote!(::leakscope_test::Flavor::MultiThread),
        Some(_) => {
            return syn::Error::new(
                flavor.span(),
                "flavor is \"multi_thread\" or \"current_thread\"",
            )
            .to_compile_error()
            .into()
        }
    };
    if workers.is_some() && flavor.to_string().contains("CurrentThread") {
        return syn::Error::new(
            workers.span(),
            "worker_threads needs flavor = \"multi_thread\"",
        )
        .to_compile_error()
        .into();
    }
    let workers = match workers {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let paused = paused.map(|b| b.value).unwrap_or(false);
    let config = match config {
        Some(e) => quote!(#e),
        None => quote!(::leakscope_test::Config::default()),
    };
    let attrs = &input.attrs;
    let vis = &input.vis;
    let name = &input.sig.ident;
    let output = &input.sig.output;
    let body = &input.block;
    let ret = match output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, t) => quote!(#t),
    };
    quote! {
        #[::core::prelude::v1::test]
        #(#attrs)*
        #vis fn #name() {
            let spec = ::leakscope_test::Spec {
                flavor: #flavor,
                worker_threads: #workers,
                start_paused: #paused,
                test: ::leakscope_test::test_id!(::core::stringify!(#name)),
            };
            ::leakscope_test::run_test(spec, #config, || async move {
                let result: #ret = async move #body.await;
                result
            });
        }
    }
    .into()
}
