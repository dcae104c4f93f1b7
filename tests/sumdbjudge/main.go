// Command sumdbjudge prints what golang.org/x/mod/sumdb/tlog and note compute for a log, so that
// the Python tests can hold athens.sumdb to the go command's own code (tests/sumdb/test_xmod.py).
//
// It reads one JSON request on stdin:
//
//	{"records": [base64...], "sizes": [n...], "proofs": [[t, n]...], "skey": "PRIVATE+KEY+..."}
//
// and writes one JSON answer: for every size n, the tree hash, the signed tree head and every
// tile tlog.NewTiles(8, 0, n) names (hash tiles from tlog.ReadTileData, data tiles as the
// checksum database server writes them); for every [t, n], tlog.ProveTree(t, n) and, for each
// record below n, tlog.ProveRecord(n, record).
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type request struct {
	Records [][]byte   `json:"records"`
	Sizes   []int64    `json:"sizes"`
	Proofs  [][2]int64 `json:"proofs"`
	SKey    string     `json:"skey"`
}

type size struct {
	N      int64             `json:"n"`
	Hash   string            `json:"hash"`
	Signed string            `json:"signed"`
	Tiles  map[string]string `json:"tiles"`
}

type proof struct {
	T       int64      `json:"t"`
	N       int64      `json:"n"`
	Tree    []string   `json:"tree"`
	Records [][]string `json:"records"`
}

type answer struct {
	Sizes  []size  `json:"sizes"`
	Proofs []proof `json:"proofs"`
}

type hashes []tlog.Hash

func (h hashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x >= int64(len(h)) {
			return nil, fmt.Errorf("index %d not stored", x)
		}
		out[i] = h[x]
	}
	return out, nil
}

func b64(hs []tlog.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fail(err)
	}
	signer, err := note.NewSigner(req.SKey)
	if err != nil {
		fail(err)
	}
	var stored hashes
	for i, data := range req.Records {
		hs, err := tlog.StoredHashes(int64(i), data, stored)
		if err != nil {
			fail(err)
		}
		stored = append(stored, hs...)
	}
	var ans answer
	for _, n := range req.Sizes {
		h, err := tlog.TreeHash(n, stored)
		if err != nil {
			fail(err)
		}
		signed, err := note.Sign(&note.Note{Text: string(tlog.FormatTree(tlog.Tree{N: n, Hash: h}))}, signer)
		if err != nil {
			fail(err)
		}
		s := size{N: n, Hash: h.String(), Signed: string(signed), Tiles: map[string]string{}}
		for _, t := range tlog.NewTiles(8, 0, n) {
			data, err := tlog.ReadTileData(t, stored)
			if err != nil {
				fail(err)
			}
			s.Tiles[t.Path()] = base64.StdEncoding.EncodeToString(data)
			if t.L != 0 {
				continue
			}
			d := t // the data tile beside a level-0 tile: the records it hashes
			d.L = -1
			var records []byte
			for i := int64(0); i < int64(d.W); i++ {
				msg, err := tlog.FormatRecord(d.N<<uint(d.H)+i, req.Records[d.N<<uint(d.H)+i])
				if err != nil {
					fail(err)
				}
				for msg[0] != '\n' { // a data tile holds each formatted record without its id line
					msg = msg[1:]
				}
				records = append(records, msg[1:]...)
			}
			s.Tiles[d.Path()] = base64.StdEncoding.EncodeToString(records)
		}
		ans.Sizes = append(ans.Sizes, s)
	}
	for _, tn := range req.Proofs {
		t, n := tn[0], tn[1]
		tp, err := tlog.ProveTree(t, n, stored)
		if err != nil {
			fail(err)
		}
		p := proof{T: t, N: n, Tree: b64(tp)}
		for i := int64(0); i < n; i++ {
			rp, err := tlog.ProveRecord(n, i, stored)
			if err != nil {
				fail(err)
			}
			p.Records = append(p.Records, b64(rp))
		}
		ans.Proofs = append(ans.Proofs, p)
	}
	if err := json.NewEncoder(os.Stdout).Encode(ans); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "sumdbjudge:", err)
	os.Exit(2)
}
