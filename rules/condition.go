package rules

// Condition is a compiled CEL condition over a target's signals.
type Condition struct {
	// Source is the expression as written in the rule file.
	Source string
}
