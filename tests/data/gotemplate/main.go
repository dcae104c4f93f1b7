// Renders each {"template", "data"} case of a JSON array on stdin with Go's html/template: the reference
// that athens/web/gotemplate.py is held to (tests/test_gotemplate.py).
package main

import (
	"bytes"
	"encoding/json"
	"html/template"
	"os"
)

type result struct {
	Out string `json:"out"`
	Err string `json:"err"`
}

func main() {
	var cases []struct {
		Template string         `json:"template"`
		Data     map[string]any `json:"data"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	results := make([]result, 0, len(cases))
	for _, c := range cases {
		var r result
		t, err := template.New("home").Parse(c.Template)
		if err == nil {
			var out bytes.Buffer
			err = t.ExecuteTemplate(&out, "home", c.Data)
			r.Out = out.String()
		}
		if err != nil {
			r.Err = err.Error()
		}
		results = append(results, r)
	}
	json.NewEncoder(os.Stdout).Encode(results)
}
