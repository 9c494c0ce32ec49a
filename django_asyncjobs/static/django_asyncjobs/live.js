/* Live admin pages of django-asyncjobs: the marked parts of a page refresh themselves.

A page opts in with {% include "admin/django_asyncjobs/live.html" %} (the toggle and this script)
and data-asyncjobs-live="NAME" on each element whose content changes. Every few seconds the page's
own URL (query string included, so filters, search and page hold) is fetched again, and each
marked element is brought up to date from the element of the same name in the answer: no reload,
no inline script, nothing but the browser.

What the user did on the page stays: an update changes only what the server changed since its
previous answer, node by node, so an opened <details>, a collapsed fieldset and Django's action
checkboxes (with the listeners its scripts put on them) are kept. No update happens while the
user types in a field, has changed a form control inside a marked element (ticked a row), has
selected text in one, or the tab is hidden; the toggle pauses it (remembered in localStorage).
A failed fetch (server down, session expired) leaves the page as it is, says so quietly and
tries again later, each time waiting longer.

After each update, document receives an "asyncjobs:live-updated" event whose detail.regions
names the refreshed elements.
*/
'use strict';
{
    const STORAGE_KEY = 'django_asyncjobs.live';
    const DEFAULT_INTERVAL_SECONDS = 5;
    const MAX_BACKOFF_SECONDS = 60;
    const TIMEOUT_SECONDS = 30;
    // Inputs one types into; focus on a checkbox or a button is not typing.
    const NOT_TYPED = new Set(['button', 'checkbox', 'color', 'file', 'hidden', 'image',
        'radio', 'range', 'reset', 'submit']);

    class Problem extends Error {}

    function clock(date) {
        return [date.getHours(), date.getMinutes(), date.getSeconds()]
            .map((part) => String(part).padStart(2, '0')).join(':');
    }

    function sameKind(a, b) {
        return a.nodeType === b.nodeType && a.nodeName === b.nodeName;
    }

    function sameShape(a, b) {
        if (!sameKind(a, b) || a.childNodes.length !== b.childNodes.length) {
            return false;
        }
        return Array.from(a.childNodes).every((child, i) => sameShape(child, b.childNodes[i]));
    }

    // The toggle of this page, which stays itself when a region around it is replaced.
    const widget = document.querySelector('.asyncjobs-live');

    function replaceContent(element, nodes) {
        element.replaceChildren(...Array.from(nodes, (node) => document.importNode(node, true)));
        const copy = element.querySelector('.asyncjobs-live');
        if (copy && widget) {
            copy.replaceWith(widget);
        }
    }

    // Bring `live` from `before` (the server's previous version of it) to `after` (its new
    // version), changing only what the server changed: an attribute or a text the server sent
    // unchanged may have been changed by a script or the user, and is theirs.
    function merge(live, before, after) {
        if (before.isEqualNode(after)) {
            return;
        }
        if (live.nodeType !== Node.ELEMENT_NODE) {
            live.nodeValue = after.nodeValue;
            return;
        }
        for (const {name, value} of after.attributes) {
            if (before.getAttribute(name) !== value) {
                live.setAttribute(name, value);
            }
        }
        for (const {name} of before.attributes) {
            if (!after.hasAttribute(name)) {
                live.removeAttribute(name);
            }
        }
        const [now, was, next] = [live.childNodes, before.childNodes, after.childNodes];
        const paired = now.length === was.length && was.length === next.length &&
            Array.from(was).every((node, i) => sameKind(node, next[i]) && sameKind(node, now[i]));
        if (!paired) {
            // Children came, went or changed kind: this element's content is the server's again.
            replaceContent(live, next);
            return;
        }
        for (let i = 0; i < was.length; i++) {
            merge(now[i], was[i], next[i]);
        }
    }

    function update(region, before, after) {
        const actions = region.querySelector('input.action-select') ||
            after.querySelector('input.action-select');
        if (!actions || sameShape(before, after)) {
            merge(region, before, after);
            return;
        }
        // Django's actions script keeps the row checkboxes it found at load: when rows come or
        // go, the whole list is replaced and the script started again on the new rows (the old
        // listeners went with the old elements).
        replaceContent(region, after.childNodes);
        const boxes = region.querySelectorAll('tr input.action-select');
        if (boxes.length && typeof window.Actions === 'function' &&
            document.getElementById('action-toggle')) {
            window.Actions(boxes);
        }
    }

    // Why the field the user is in holds the update, or ''.
    function focusReason() {
        const element = document.activeElement;
        if (!element) {
            return '';
        }
        if (element.tagName === 'SELECT') {
            return 'held while you select';
        }
        const typed = element.isContentEditable || element.tagName === 'TEXTAREA' ||
            (element.tagName === 'INPUT' && !NOT_TYPED.has(element.type));
        return typed ? 'held while you type' : '';
    }

    function changed(control) {
        if (control.type === 'checkbox' || control.type === 'radio') {
            return control.checked !== control.defaultChecked;
        }
        if (control.tagName === 'SELECT') {
            const options = Array.from(control.options);
            if (control.multiple) {
                return options.some((option) => option.selected !== option.defaultSelected);
            }
            const initial = options.findIndex((option) => option.defaultSelected);
            return control.selectedIndex !== Math.max(initial, 0);
        }
        return control.type !== 'hidden' && control.value !== control.defaultValue;
    }

    // Why an update must wait, or '' when it may happen now.
    function holdReason(regions) {
        const focused = focusReason();
        if (focused) {
            return focused;
        }
        for (const region of regions) {
            if (Array.from(region.querySelectorAll('input, select, textarea')).some(changed)) {
                return 'held while you select';
            }
        }
        const selection = window.getSelection();
        const inRegion = (node) => regions.some((region) => region.contains(node));
        if (selection && !selection.isCollapsed &&
            (inRegion(selection.anchorNode) || inRegion(selection.focusNode))) {
            return 'held while text is selected';
        }
        return '';
    }

    function stored() {
        try {
            return window.localStorage.getItem(STORAGE_KEY);
        } catch (error) {  // storage blocked: live, and not remembered
            return null;
        }
    }

    function store(on) {
        try {
            if (on) {
                window.localStorage.removeItem(STORAGE_KEY);
            } else {
                window.localStorage.setItem(STORAGE_KEY, 'off');
            }
        } catch (error) {
            // Blocked storage: the choice holds for this page only.
        }
    }

    async function fetchPage(url) {
        const controller = new AbortController();
        const timeout = setTimeout(() => controller.abort(), TIMEOUT_SECONDS * 1000);
        try {
            // redirect: 'manual': an expired session answers with a redirect to the login page,
            // which must never take the place of this page.
            const response = await fetch(url, {
                credentials: 'same-origin', redirect: 'manual', cache: 'no-store',
                signal: controller.signal,
            });
            if (response.type === 'opaqueredirect') {
                throw new Problem('redirected (signed out?): reload the page');
            }
            if (!response.ok) {
                throw new Problem('the server answered ' + response.status);
            }
            return new DOMParser().parseFromString(await response.text(), 'text/html');
        } catch (error) {
            if (error instanceof Problem) {
                throw error;
            }
            throw new Problem(controller.signal.aborted ? 'no answer' : 'server unreachable');
        } finally {
            clearTimeout(timeout);
        }
    }

    function start() {
        const regions = Array.from(document.querySelectorAll('[data-asyncjobs-live]'));
        if (!regions.length) {
            return;
        }
        // The server's version of each region, as the page arrived; updated with each answer.
        const before = new Map(regions.map((r) => [r.dataset.asyncjobsLive, r.cloneNode(true)]));
        const toggle = widget.querySelector('.asyncjobs-live-toggle');
        const status = widget.querySelector('.asyncjobs-live-state');
        let on = stored() !== 'off';
        let timer = null;
        let busy = false;
        let failures = 0;
        let updatedAt = new Date();

        // Read on each turn, so that a page (or a test) may change it.
        const intervalMs = () => 1000 * Math.max(
            1, Number(widget.dataset.intervalSeconds) || DEFAULT_INTERVAL_SECONDS);

        function show(state, text) {
            widget.dataset.state = state;
            status.textContent = text;
            toggle.textContent = on ? 'Live: on' : 'Live: off';
            toggle.setAttribute('aria-pressed', String(on));
        }

        function schedule(ms) {
            clearTimeout(timer);
            timer = on ? setTimeout(turn, ms) : null;
        }

        async function turn() {
            if (!on || busy) {
                return;
            }
            if (document.visibilityState === 'hidden') {
                show('hidden', 'paused while hidden');
                return;  // visibilitychange starts the next turn
            }
            const reason = holdReason(regions);
            if (reason) {
                show('held', reason);
                schedule(intervalMs());
                return;
            }
            busy = true;
            try {
                const page = await fetchPage(window.location.href);
                const fresh = regions.map((r) => page.querySelector(
                    '[data-asyncjobs-live="' + CSS.escape(r.dataset.asyncjobsLive) + '"]'));
                if (fresh.some((element) => !element)) {
                    throw new Problem('this page changed: reload it');
                }
                // The user may have started something while the answer was on its way.
                const late = on ? holdReason(regions) : 'paused';
                if (late) {
                    show(on ? 'held' : 'paused', late);
                } else {
                    regions.forEach((region, i) => {
                        const name = region.dataset.asyncjobsLive;
                        update(region, before.get(name), fresh[i]);
                        before.set(name, fresh[i]);
                    });
                    failures = 0;
                    updatedAt = new Date();
                    show('live', 'updated ' + clock(updatedAt));
                    document.dispatchEvent(new CustomEvent('asyncjobs:live-updated', {
                        detail: {regions: regions.map((r) => r.dataset.asyncjobsLive)},
                    }));
                }
                schedule(intervalMs());
            } catch (error) {
                if (!(error instanceof Problem)) {
                    console.error(error);
                }
                failures += 1;
                const wait = Math.min(MAX_BACKOFF_SECONDS * 1000, intervalMs() * 2 ** failures);
                const why = error instanceof Problem ? error.message : 'could not update';
                show('error', 'not updated since ' + clock(updatedAt) + ': ' + why +
                    ', next try in ' + Math.round(wait / 1000) + ' s');
                schedule(wait);
            } finally {
                busy = false;
            }
        }

        toggle.addEventListener('click', () => {
            on = !on;
            store(on);
            if (on) {
                show('live', 'updated ' + clock(updatedAt));
                schedule(0);
            } else {
                clearTimeout(timer);
                show('paused', 'paused');
            }
        });
        document.addEventListener('visibilitychange', () => {
            if (document.visibilityState === 'visible') {
                schedule(0);
            }
        });
        widget.hidden = false;
        if (on) {
            show('live', 'updated ' + clock(updatedAt));
            schedule(intervalMs());
        } else {
            show('paused', 'paused');
        }
    }

    if (widget) {
        start();
    }
}
