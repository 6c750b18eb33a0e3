import { describe, expect, it, vi } from "vitest";
import { collectAll, currentToken, firstPage, hasPrev, pageNumber, pager } from "./paging";

describe("pager", () => {
  it("walks forward with server tokens and back through the ones it saw", () => {
    let s = firstPage();
    expect(currentToken(s)).toBe("");
    expect(hasPrev(s)).toBe(false);
    s = pager(s, { type: "next", token: "t2" });
    s = pager(s, { type: "next", token: "t3" });
    expect(currentToken(s)).toBe("t3");
    expect(pageNumber(s)).toBe(3);
    s = pager(s, { type: "prev" });
    expect(currentToken(s)).toBe("t2");
    s = pager(s, { type: "prev" });
    expect(currentToken(s)).toBe("");
    expect(pager(s, { type: "prev" })).toBe(s);
  });
  it("does not move past the last page (empty token)", () => {
    const s = firstPage();
    expect(pager(s, { type: "next", token: "" })).toBe(s);
  });
  it("goes back to the first page on reset (new filters)", () => {
    const s = pager(pager(firstPage(), { type: "next", token: "a" }), { type: "reset" });
    expect(s).toEqual(firstPage());
  });
});

describe("collectAll", () => {
  it("follows nextPageToken until it is empty", async () => {
    const pages: Record<string, { items: number[]; nextPageToken: string }> = {
      "": { items: [1, 2], nextPageToken: "b" },
      b: { items: [3], nextPageToken: "c" },
      c: { items: [4], nextPageToken: "" },
    };
    const fetchPage = vi.fn(async (t: string) => pages[t]!);
    expect(await collectAll(fetchPage)).toEqual({ items: [1, 2, 3, 4], truncated: false });
    expect(fetchPage.mock.calls.map((c) => c[0])).toEqual(["", "b", "c"]);
  });
  it("stops at maxItems and says the list is cut", async () => {
    let n = 0;
    const r = await collectAll(async () => ({ items: [n++, n++], nextPageToken: `p${n}` }), 5);
    expect(r.truncated).toBe(true);
    expect(r.items.length).toBe(6);
  });
  it("stops when a server repeats a token instead of looping forever", async () => {
    const r = await collectAll(async () => ({ items: [1], nextPageToken: "same" }));
    expect(r).toEqual({ items: [1, 1], truncated: true });
  });
  it("treats omitted fields (proto3 defaults) as an empty last page", async () => {
    expect(await collectAll(async () => ({}))).toEqual({ items: [], truncated: false });
  });
});
