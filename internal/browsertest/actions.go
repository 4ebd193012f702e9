package browsertest

import (
	"context"
	"strings"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// pageText is the script that reads the visible text of the page.
const pageText = `document.body ? document.body.innerText : ""`

// Do runs chromedp actions on the browser's tab, in order, within the
// timeout, and returns the first error: the escape hatch for what the
// helpers do not cover, and the way to expect a failure (a navigation
// whose handshake fails returns an error naming the net:: code).
func (b *Browser) Do(steps ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	return chromedp.Do(ctx, steps...)
}

// Context returns the chromedp context of the browser's tab, for
// chromedp.Run and chromedp.Call with actions that return a value. Derive a
// context with a timeout from it: a deadline on it would stop the browser.
func (b *Browser) Context() context.Context { return b.ctx }

func (b *Browser) must(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.tb.Helper()
	if err := b.Do(steps...); err != nil {
		b.tb.Fatalf("browsertest: %s: %v", what, err)
	}
}

// value runs an action that returns a value, failing the test on error.
func value[T any](b *Browser, what string, a chromedp.Action[T]) T {
	b.tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.tb.Fatalf("browsertest: %s: %v", what, err)
	}
	return v
}

// Navigate loads url and waits for the page to load; it fails the test
// when the page cannot be loaded (a refused handshake, an unknown host).
func (b *Browser) Navigate(url string) {
	b.tb.Helper()
	b.must("navigate to "+url, chromedp.Navigate(url))
}

// URL returns the address of the current page.
func (b *Browser) URL() string {
	b.tb.Helper()
	return value(b, "read the URL", chromedp.Location())
}

// Text returns the visible text of the current page's body.
func (b *Browser) Text() string {
	b.tb.Helper()
	return value(b, "read the page text", chromedp.Evaluate[string](pageText))
}

// Fill types value into the form field that the CSS selector names, once
// it is visible, replacing what it held.
func (b *Browser) Fill(selector, value string) {
	b.tb.Helper()
	sel := chromedp.CSS(selector)
	b.must("fill "+selector,
		chromedp.WaitVisible(sel),
		chromedp.Clear(sel),
		chromedp.SendKeys(sel, value))
}

// Click clicks the element that the CSS selector names, once it is
// visible. A click that submits a form returns before the next page has
// loaded: follow it with WaitURL or WaitText.
func (b *Browser) Click(selector string) {
	b.tb.Helper()
	b.must("click "+selector, chromedp.Click(chromedp.CSS(selector)))
}

// WaitURL waits until the current page's address starts with prefix and
// returns the address.
func (b *Browser) WaitURL(prefix string) string {
	b.tb.Helper()
	var last string
	if !b.poll(func(ctx context.Context, t *chromedp.Target) bool {
		u, err := chromedp.Location()(ctx, t)
		if err == nil {
			last = u
		}
		return err == nil && strings.HasPrefix(u, prefix)
	}) {
		b.tb.Fatalf("browsertest: waited %v for a URL starting with %q; the page is at %q", b.timeout, prefix, last)
	}
	return last
}

// WaitText waits until the current page's visible text contains text and
// returns the whole text.
func (b *Browser) WaitText(text string) string {
	b.tb.Helper()
	var last string
	if !b.poll(func(ctx context.Context, t *chromedp.Target) bool {
		s, err := chromedp.Evaluate[string](pageText)(ctx, t)
		if err == nil {
			last = s
		}
		return err == nil && strings.Contains(s, text)
	}) {
		b.tb.Fatalf("browsertest: waited %v for the text %q; the page says %q", b.timeout, text, last)
	}
	return last
}

// Cookies returns the cookies the browser would send to the given URLs,
// HttpOnly ones included; with no URL, those of the current page.
func (b *Browser) Cookies(urls ...string) []*network.Cookie {
	b.tb.Helper()
	res := value(b, "read cookies", func(ctx context.Context, t *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, t, network.GetCookies, network.GetCookiesParams{URLs: urls})
	})
	return res.Cookies
}

// Cookie returns the cookie named name that the browser would send to url,
// or nil.
func (b *Browser) Cookie(url, name string) *network.Cookie {
	b.tb.Helper()
	for _, c := range b.Cookies(url) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// poll runs cond until it holds or the timeout passes. An error inside
// cond (a page replaced while it is read) counts as "not yet".
func (b *Browser) poll(cond func(ctx context.Context, t *chromedp.Target) bool) bool {
	deadline := time.Now().Add(b.timeout)
	for {
		ok := false
		_ = b.Do(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			ok = cond(ctx, t)
			return nil
		}))
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
