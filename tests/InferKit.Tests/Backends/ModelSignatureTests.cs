using InferKit.Backends;
using InferKit.Tensors;

namespace InferKit.Tests.Backends;

/// <summary>A signature that no request could fit fails where it is built, naming what is wrong.</summary>
public sealed class ModelSignatureTests
{
    private static TensorSpec Spec(string name) => new(name, TensorElementType.Float32, [-1, 4]);

    [Fact]
    public void Two_inputs_of_one_name_are_refused_naming_it()
    {
        // Before, the signature was built; every request then failed: one 'x' filled the first, the second was "missing".
        var ex = Assert.ThrowsAny<ArgumentException>(() => new ModelSignature([Spec("x"), Spec("x")], [Spec("y")]));
        Assert.Contains("input 'x'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Two_outputs_of_one_name_are_refused_naming_it()
    {
        var ex = Assert.ThrowsAny<ArgumentException>(() => new ModelSignature([Spec("x")], [Spec("y"), Spec("z"), Spec("y")]));
        Assert.Contains("output 'y'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_null_spec_is_an_ArgumentException_not_a_NullReferenceException()
    {
        var ex = Assert.ThrowsAny<ArgumentException>(() => new ModelSignature([Spec("x"), null!], [Spec("y")]));
        Assert.Contains("input 1", ex.Message, StringComparison.Ordinal);
        Assert.ThrowsAny<ArgumentException>(() => new ModelSignature([Spec("x")], [null!]));
    }

    [Fact]
    public void Distinct_names_are_accepted()
    {
        var signature = new ModelSignature([Spec("x"), Spec("mask")], [Spec("y")]);
        Assert.Equal(1, signature.IndexOfInput("mask"));
        Assert.True(signature.IsBatchable);
    }
}
