package function

// Describe renders a value for the tests of package function_test.
var Describe = describe
